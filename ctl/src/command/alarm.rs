//! `alarm list` and `alarm disarm`, as etcdctl 3.5 runs and prints them.

use clap::Subcommand;
use rkv_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmMember, AlarmRequest, AlarmType};

use crate::client::Client;
use crate::error::CtlError;
use crate::print::Out;

#[derive(Subcommand, Debug)]
pub enum AlarmCommand {
    /// Lists all alarms.
    List,
    /// Disarms all alarms.
    Disarm,
}

/// etcdctl prints an alarm with Go's `%+v` of the protobuf message (its text form).
fn line(a: &AlarmMember) -> String {
    let name = AlarmType::try_from(a.alarm).map(|t| t.as_str_name()).unwrap_or("NONE");
    if a.member_id == 0 {
        return format!("alarm:{name} ");
    }
    format!("memberID:{} alarm:{name} ", a.member_id)
}

pub async fn run(command: AlarmCommand, c: &Client, out: &mut Out) -> Result<(), CtlError> {
    let get = AlarmRequest { action: AlarmAction::Get as i32, member_id: 0, alarm: AlarmType::None as i32 };
    let active = c.call(|| async { c.maintenance().alarm(get).await }).await?.alarms;
    match command {
        AlarmCommand::List => active.iter().for_each(|a| out.line(&line(a))),
        // The Go client's AlarmDisarm with an empty member: every active alarm, one by one.
        AlarmCommand::Disarm => {
            for a in active {
                let req = AlarmRequest {
                    action: AlarmAction::Deactivate as i32,
                    member_id: a.member_id,
                    alarm: a.alarm,
                };
                let resp = c.call(|| async { c.maintenance().alarm(req).await }).await?;
                resp.alarms.iter().for_each(|a| out.line(&line(a)));
            }
        }
    }
    Ok(())
}
