// Package testserver replaces k8s.io/apiserver/pkg/storage/etcd3/testserver when the
// apiserver's own storage tests run against rkv (scripts/kubernetes.sh copies this file over the
// original, as kine does with its own testserver). RunEtcd keeps the original's signature and
// contract: a fresh single-member server per call, stopped when the test ends, and a client
// wrapped in the test recorders. The server is a real rkv process ($RKV_BIN) instead of an
// embedded etcd; of the embed.Config it honours what the tests set: WatchProgressNotifyInterval.
package testserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
)

// NewTestConfig returns the config RunEtcd reads; ports are picked when the server starts.
func NewTestConfig(t testing.TB) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	return cfg
}

// freePort returns a loopback port below Linux's ephemeral range (32768-60999) that binds now
// and that this process has not handed out before (callers hold autoPortLock): a bind(:0)
// port can be taken by an outgoing connection before rkv binds it. The same rule as
// tests/kubernetes/rkvtest and tests/common/ports.rs.
func freePort(t testing.TB) int {
	for i := 0; i < 1000; i++ {
		port := 15000 + rand.IntN(17000)
		if givenPorts[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		givenPorts[port] = true
		return port
	}
	t.Fatal("no free port between 15000 and 32000")
	return 0
}

var givenPorts = map[int]bool{}

var autoPortLock sync.Mutex

// RunEtcd starts an rkv member with the provided config (or NewTestConfig(t) if nil) and
// returns a client connected to it. The member is terminated when the test ends.
func RunEtcd(t testing.TB, cfg *embed.Config) *kubernetes.Client {
	t.Helper()
	bin := os.Getenv("RKV_BIN")
	if bin == "" {
		t.Fatal("RKV_BIN is not set: run these tests through scripts/kubernetes.sh")
	}
	if cfg == nil {
		cfg = NewTestConfig(t)
	}

	// Ports are chosen and bound under one lock so that parallel tests do not pick the same.
	autoPortLock.Lock()
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	logPath := filepath.Join(cfg.Dir, "rkv.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		autoPortLock.Unlock()
		t.Fatal(err)
	}
	cmd := exec.Command(bin,
		"--name", "default", "--data-dir", filepath.Join(cfg.Dir, "default.rkv"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--experimental-watch-progress-notify-interval", cfg.WatchProgressNotifyInterval.String(),
		"--log-level", "warn",
	)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	err = cmd.Start()
	logFile.Close()
	if err != nil {
		autoPortLock.Unlock()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			if log, err := os.ReadFile(logPath); err == nil {
				t.Logf("rkv log:\n%s", log)
			}
		}
	})

	client, err := kubernetes.New(clientv3.Config{
		Endpoints:   []string{clientURL},
		DialTimeout: 10 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithBlock()},
		Logger:      zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel)).Named("etcd-client"),
	})
	if err != nil {
		autoPortLock.Unlock()
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	err = waitReady(client, clientURL, exited)
	autoPortLock.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	client.KV = storagetesting.NewKVRecorder(client.KV)
	client.Kubernetes = storagetesting.NewKubernetesRecorder(client.Kubernetes)
	return client
}

// waitReady waits until the member answers Status with a leader, as embed's ReadyNotify does.
func waitReady(client *kubernetes.Client, url string, exited <-chan struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return fmt.Errorf("rkv exited before it was ready")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := client.Status(ctx, url)
		cancel()
		if err == nil && st.Leader != 0 {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("rkv took too long to start")
}
