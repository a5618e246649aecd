//! Loopback ports for test and benchmark servers, below Linux's ephemeral range
//! (32768-60999): a port the OS hands out as "free" with bind(:0) is in that range and can
//! be taken by any outgoing connection before the server binds it, which made cluster tests
//! fail with "Address already in use" under load. A random port below it that binds now and
//! that this process has not handed out before is far less likely to be taken.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

pub fn free_port() -> u16 {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..1000 {
        let port = rand::random_range(15_000..32_000);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port between 15000 and 32000");
}
