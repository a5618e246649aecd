// Package rkvtest starts real rkv processes for the Go tests: one member or a Raft cluster on
// free loopback ports, each member in its own data dir, killed with SIGKILL or stopped with
// SIGTERM. The rkv binary comes from $RKV_BIN (scripts/kubernetes.sh sets it).
package rkvtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// StartTimeout bounds how long a member may take to answer its first Status.
const StartTimeout = 60 * time.Second

// Member is one rkv process.
type Member struct {
	Name      string
	ClientURL string
	PeerURL   string
	DataDir   string
	LogPath   string
	args      []string
	cmd       *exec.Cmd
	exited    chan struct{}
}

// Cluster is a set of members started together with one --initial-cluster.
type Cluster struct {
	Members []*Member
}

// Binary is the rkv executable under test.
func Binary(t testing.TB) string {
	t.Helper()
	bin := os.Getenv("RKV_BIN")
	if bin == "" {
		t.Fatal("RKV_BIN is not set: run the Go tests through scripts/kubernetes.sh")
	}
	return bin
}

// FreePort returns a loopback port below Linux's ephemeral range (32768-60999) that binds
// now and that this process has not handed out before. A port from bind(:0) is in the
// ephemeral range, where any outgoing connection (raft peers dialing each other) can take it
// before the member binds it: that made cluster starts fail with "Address already in use".
// tests/common/ports.rs does the same for the Rust tests.
func FreePort(t testing.TB) int {
	t.Helper()
	givenMu.Lock()
	defer givenMu.Unlock()
	for i := 0; i < 1000; i++ {
		port := 15000 + rand.IntN(17000)
		if given[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		given[port] = true
		return port
	}
	t.Fatal("no free port between 15000 and 32000")
	return 0
}

var (
	givenMu sync.Mutex
	given   = map[int]bool{}
)

// StartCluster starts `size` members (1 for a single member) with `extra` flags each, waits
// until every one answers Status, and stops them all when the test ends.
func StartCluster(t testing.TB, size int, extra ...string) *Cluster {
	t.Helper()
	c := NewCluster(t, size)
	c.Start(t, extra...)
	return c
}

// NewCluster plans `size` members (names m0, m1..., free ports, data dirs in a temp dir)
// without starting them, so that a test can fill their data dirs first (a snapshot restore).
func NewCluster(t testing.TB, size int) *Cluster {
	t.Helper()
	dir := t.TempDir()
	c := &Cluster{}
	for i := 0; i < size; i++ {
		c.Members = append(c.Members, &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			DataDir:   filepath.Join(dir, fmt.Sprintf("m%d.rkv", i)),
			LogPath:   filepath.Join(dir, fmt.Sprintf("m%d.log", i)),
		})
	}
	return c
}

// InitialCluster is the members' --initial-cluster value: name=peer-url,...
func (c *Cluster) InitialCluster() string {
	var initial []string
	for _, m := range c.Members {
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	return strings.Join(initial, ",")
}

// Start starts the planned members with `extra` flags each, waits until every one answers
// Status, and stops them all when the test ends.
func (c *Cluster) Start(t testing.TB, extra ...string) {
	t.Helper()
	for _, m := range c.Members {
		m.args = append([]string{
			"--name", m.Name, "--data-dir", m.DataDir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", c.InitialCluster(),
		}, extra...)
		m.Start(t)
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.Stop()
			if t.Failed() {
				m.DumpLog(t)
			}
		}
	})
	for _, m := range c.Members {
		m.WaitReady(t)
	}
}

// Endpoints are the members' client URLs.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.Members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// Client dials every member.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	return dial(t, c.Endpoints())
}

// Client dials this member only.
func (m *Member) Client(t testing.TB) *clientv3.Client {
	return dial(t, []string{m.ClientURL})
}

func dial(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// Leader is the member whose Status names itself as leader; it waits for one.
func (c *Cluster) Leader(t testing.TB) *Member {
	t.Helper()
	deadline := time.Now().Add(StartTimeout)
	for time.Now().Before(deadline) {
		for _, m := range c.Members {
			if !m.Running() {
				continue
			}
			st, err := m.status()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return m
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no leader elected")
	return nil
}

// Start launches the member's process (again, after Kill or Stop) with its data dir intact.
func (m *Member) Start(t testing.TB) {
	t.Helper()
	logFile, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Binary(t), m.args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	m.cmd = cmd
	m.exited = make(chan struct{})
	go func(exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(m.exited)
}

// Pid is the process ID of the running member.
func (m *Member) Pid() int { return m.cmd.Process.Pid }

// Running says whether the process is alive.
func (m *Member) Running() bool {
	if m.cmd == nil {
		return false
	}
	select {
	case <-m.exited:
		return false
	default:
		return true
	}
}

func (m *Member) status() (*clientv3.StatusResponse, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{m.ClientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return cli.Status(ctx, m.ClientURL)
}

// WaitReady waits until the member answers Status and has a leader.
func (m *Member) WaitReady(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(StartTimeout)
	for time.Now().Before(deadline) {
		if !m.Running() {
			m.DumpLog(t)
			t.Fatalf("rkv member %s exited before it was ready", m.Name)
		}
		if st, err := m.status(); err == nil && st.Leader != 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	m.DumpLog(t)
	t.Fatalf("rkv member %s not ready within %v", m.Name, StartTimeout)
}

// Kill sends SIGKILL and waits for the process to end.
func (m *Member) Kill() { m.signal(syscall.SIGKILL) }

// Stop sends SIGTERM and waits for the process to end.
func (m *Member) Stop() { m.signal(syscall.SIGTERM) }

func (m *Member) signal(sig syscall.Signal) {
	if !m.Running() {
		return
	}
	m.cmd.Process.Signal(sig)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
	}
}

// DumpLog writes the member's log into the test output.
func (m *Member) DumpLog(t testing.TB) {
	log, err := os.ReadFile(m.LogPath)
	if err != nil {
		return
	}
	const keep = 8000
	if len(log) > keep {
		log = log[len(log)-keep:]
	}
	t.Logf("log of rkv member %s (%s):\n%s", m.Name, m.LogPath, log)
}
