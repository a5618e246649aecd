package controlplane

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"rkv.test/kubernetes/rkvtest"
)

// adminToken is a static bearer token of a system:masters user, shared by the test, kubectl,
// the controller manager and the scheduler.
const adminToken = "rkv-test-admin-token"

// process is one Kubernetes component run as a child process, logging to a file.
type process struct {
	name   string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startProcess(t testing.TB, dir, name string, args ...string) *process {
	t.Helper()
	bin := filepath.Join(os.Getenv("KUBE_BIN_DIR"), name)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s not built (KUBE_BIN_DIR=%q): run through scripts/kubernetes.sh", name, os.Getenv("KUBE_BIN_DIR"))
	}
	p := &process{name: name, log: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	go func() { p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			p.dumpLog(t)
		}
	})
	return p
}

// stop sends SIGTERM and waits for the process to end (SIGKILL after 20 s); a no-op once it
// has ended.
func (p *process) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// startEtcd starts etcd's own server ($KUBE_BIN_DIR/etcd, 3.6.8) as member `name` of the
// one-member cluster name=peerURL on `dataDir` (a new one, or one etcdutl restored with the same
// name and peer URL), serving clients on a free loopback port, and waits until it has a leader.
func startEtcd(t testing.TB, name, dataDir, peerURL string, extra ...string) (clientURL string, p *process) {
	t.Helper()
	clientURL = fmt.Sprintf("http://127.0.0.1:%d", rkvtest.FreePort(t))
	p = startProcess(t, t.TempDir(), "etcd", append([]string{
		"--name=" + name, "--data-dir=" + dataDir,
		"--listen-client-urls=" + clientURL, "--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL, "--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=" + name + "=" + peerURL,
	}, extra...)...)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	eventually(t, time.Minute, "etcd ready", func() (bool, string) {
		select {
		case <-p.exited:
			t.Fatal("etcd exited")
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := cli.Status(ctx, clientURL)
		return err == nil && st.Leader != 0, fmt.Sprint(err)
	})
	return clientURL, p
}

// dumpLog shows the end of a failed test's component log and keeps the whole log outside the
// test's temp dir, which is removed.
func (p *process) dumpLog(t testing.TB) {
	log, _ := os.ReadFile(p.log)
	kept := filepath.Join(os.TempDir(), "rkv-kube-logs", strings.ReplaceAll(t.Name(), "/", "_"), p.name+".log")
	if err := os.MkdirAll(filepath.Dir(kept), 0o755); err == nil {
		os.WriteFile(kept, log, 0o644)
	}
	const keep = 4000
	if len(log) > keep {
		log = log[len(log)-keep:]
	}
	t.Logf("last lines of %s (whole log: %s):\n%s", p.name, kept, log)
}

// controlPlane is kube-apiserver, kube-controller-manager and kube-scheduler on an etcd API
// (rkv, or etcd itself in the benchmark).
type controlPlane struct {
	dir        string
	url        string
	kubeconfig string
	apiserver  *process
	client     *kubernetes.Clientset
}

// startControlPlane starts the apiserver (startAPIServer), then the controller manager and the
// scheduler against it, and waits until the default service account exists (pods can be
// created from then on).
func startControlPlane(t testing.TB, etcdServers []string) *controlPlane {
	t.Helper()
	cp := startAPIServer(t, etcdServers)
	dir := cp.dir
	startProcess(t, dir, "kube-controller-manager",
		"--kubeconfig="+cp.kubeconfig, "--authentication-kubeconfig="+cp.kubeconfig,
		"--authorization-kubeconfig="+cp.kubeconfig, "--leader-elect=false",
		"--secure-port=0", "--service-account-private-key-file="+filepath.Join(dir, "sa.key"),
		// No kubelet runs: the node lifecycle controller would mark the API-only nodes
		// unreachable and taint them.
		"--controllers=*,-node-lifecycle-controller", "--v=2",
	)
	startProcess(t, dir, "kube-scheduler",
		"--kubeconfig="+cp.kubeconfig, "--authentication-kubeconfig="+cp.kubeconfig,
		"--authorization-kubeconfig="+cp.kubeconfig, "--leader-elect=false", "--secure-port=0", "--v=2",
	)
	eventually(t, 2*time.Minute, "the default service account", func() (bool, string) {
		_, err := cp.client.CoreV1().ServiceAccounts("default").Get(context.Background(), "default", getOpts)
		return err == nil, fmt.Sprint(err)
	})
	return cp
}

// startAPIServer generates the service-account key pair and a token file, then starts
// kube-apiserver alone against `etcdServers` with `extra` flags and waits until it is ready.
func startAPIServer(t testing.TB, etcdServers []string, extra ...string) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, "sa.key", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	writeFile(t, dir, "sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	writeFile(t, dir, "tokens.csv", []byte(adminToken+`,admin,admin-uid,"system:masters"`+"\n"))

	port := rkvtest.FreePort(t)
	cp := &controlPlane{dir: dir, url: fmt.Sprintf("https://127.0.0.1:%d", port)}
	cp.kubeconfig = writeFile(t, dir, "kubeconfig", []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: rkv
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: rkv
  context: {cluster: rkv, user: admin}
current-context: rkv
`, cp.url, adminToken)))

	cp.apiserver = startProcess(t, dir, "kube-apiserver", append([]string{
		"--etcd-servers=" + strings.Join(etcdServers, ","),
		fmt.Sprintf("--secure-port=%d", port), "--bind-address=127.0.0.1",
		// The address of the `kubernetes` Service's endpoints: not loopback, which Endpoints
		// refuse; nothing dials it here.
		"--advertise-address=192.0.2.1", "--cert-dir=" + filepath.Join(dir, "certs"),
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"), "--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file=" + filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
	}, extra...)...)
	// QPS -1: no client-side rate limit, so that the benchmark measures the servers.
	cfg := &rest.Config{Host: cp.url, BearerToken: adminToken, QPS: -1,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	cp.client = kubernetes.NewForConfigOrDie(cfg)
	cp.waitHealthy(t, "/readyz")
	return cp
}

// healthz fetches an apiserver health endpoint with ?verbose, returning the body.
func (cp *controlPlane) healthz(path string) (int, string, error) {
	client := &http.Client{Timeout: 5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	req, err := http.NewRequest("GET", cp.url+path+"?verbose", nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func (cp *controlPlane) waitHealthy(t testing.TB, path string) {
	t.Helper()
	eventually(t, 2*time.Minute, "apiserver "+path, func() (bool, string) {
		select {
		case <-cp.apiserver.exited:
			t.Fatal("kube-apiserver exited")
		default:
		}
		code, body, err := cp.healthz(path)
		return err == nil && code == 200, fmt.Sprintf("%d %v %s", code, err, body)
	})
}

// kubectl runs kubectl against the control plane, failing the test on an error.
func (cp *controlPlane) kubectl(t testing.TB, stdin string, args ...string) string {
	t.Helper()
	out, err := cp.tryKubectl(stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (cp *controlPlane) tryKubectl(stdin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(os.Getenv("KUBE_BIN_DIR"), "kubectl"),
		append([]string{"--kubeconfig=" + cp.kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// rctl runs the project's own etcdctl against the rkv cluster.
func rctl(t testing.TB, rkv *rkvtest.Cluster, args ...string) string {
	t.Helper()
	bin := os.Getenv("RCTL_BIN")
	if bin == "" {
		bin = filepath.Join(filepath.Dir(os.Getenv("RKV_BIN")), "rctl")
	}
	cmd := exec.Command(bin, append([]string{"--endpoints=" + strings.Join(rkv.Endpoints(), ",")}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// eventually polls `cond` until it holds, failing with its last description after `timeout`.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		var ok bool
		if ok, last = cond(); ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, last)
}

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
