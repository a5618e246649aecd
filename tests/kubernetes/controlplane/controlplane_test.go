// A real kube-apiserver, kube-controller-manager and kube-scheduler (Kubernetes v1.36.3) run on
// rkv: the user-visible flow of a small cluster, then faults under the running apiserver.
package controlplane

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"rkv.test/kubernetes/rkvtest"
)

var getOpts = metav1.GetOptions{}

const nodeCount = 3

// registerNodes creates API-only Node objects (no kubelet) and marks them Ready with room for
// pods, so that the scheduler binds pods to them.
func registerNodes(t testing.TB, cp *controlPlane) {
	for i := 1; i <= nodeCount; i++ {
		name := fmt.Sprintf("node-%d", i)
		cp.kubectl(t, fmt.Sprintf(`apiVersion: v1
kind: Node
metadata:
  name: %s
  labels: {kubernetes.io/hostname: %s}
`, name, name), "apply", "-f", "-")
		now := time.Now().UTC().Format(time.RFC3339)
		resources := `{"cpu":"8","memory":"32Gi","pods":"110"}`
		cp.kubectl(t, "", "patch", "node", name, "--subresource=status", "--type=merge", "-p",
			fmt.Sprintf(`{"status":{"capacity":%s,"allocatable":%s,"conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"API-only node","lastHeartbeatTime":%q,"lastTransitionTime":%q}]}}`,
				resources, resources, now, now))
		// The TaintNodesByCondition admission plugin taints a new node not-ready; the node
		// lifecycle controller (off here, no kubelet heartbeats) would lift it once Ready.
		cp.kubectl(t, "", "taint", "nodes", name, "node.kubernetes.io/not-ready:NoSchedule-")
	}
}

// boundPods counts the live (not terminating) pods with label app=`app` that the scheduler
// has bound to a node, and all live pods.
func boundPods(cp *controlPlane, app string) (bound, live int, err error) {
	pods, err := cp.client.CoreV1().Pods("default").List(context.Background(),
		metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return 0, 0, err
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		live++
		if p.Spec.NodeName != "" {
			bound++
		}
	}
	return bound, live, nil
}

func waitBound(t testing.TB, cp *controlPlane, app string, want int) {
	t.Helper()
	eventually(t, 2*time.Minute, fmt.Sprintf("%d bound pods of %s", want, app), func() (bool, string) {
		bound, live, err := boundPods(cp, app)
		return err == nil && bound == want && live == want, fmt.Sprintf("bound %d live %d err %v", bound, live, err)
	})
}

const apiDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - {name: api, image: registry.k8s.io/pause:3.10}
`

func TestControlPlane(t *testing.T) {
	for _, size := range []int{1, 3} {
		t.Run(fmt.Sprintf("members=%d", size), func(t *testing.T) {
			rkv := rkvtest.StartCluster(t, size)
			cp := startControlPlane(t, rkv.Endpoints())
			ctx := context.Background()
			registerNodes(t, cp)

			cp.kubectl(t, "", "create", "deployment", "web", "--image=nginx", "--replicas=3")
			eventually(t, time.Minute, "web's ReplicaSet", func() (bool, string) {
				out, err := cp.tryKubectl("", "get", "replicasets", "-l", "app=web", "-o", "name")
				return err == nil && strings.HasPrefix(out, "replicaset.apps/web-"), out
			})
			waitBound(t, cp, "web", 3)
			cp.kubectl(t, apiDeployment, "apply", "-f", "-")
			waitBound(t, cp, "api", 2)
			cp.kubectl(t, "", "scale", "deployment", "web", "--replicas=6")
			waitBound(t, cp, "web", 6)
			// Without a kubelet a bound pod stays Terminating after scale-down: count live ones.
			cp.kubectl(t, "", "scale", "deployment", "web", "--replicas=2")
			waitBound(t, cp, "web", 2)

			cp.kubectl(t, "", "create", "service", "clusterip", "web", "--tcp=80:80")
			cp.kubectl(t, "", "create", "configmap", "settings", "--from-literal=mode=fast")
			cp.kubectl(t, "", "create", "secret", "generic", "token", "--from-literal=token=s3cr3t")
			cp.kubectl(t, "", "create", "namespace", "scratch")
			cp.kubectl(t, "", "create", "configmap", "doomed", "-n", "scratch", "--from-literal=a=b")
			cp.kubectl(t, "", "create", "secret", "generic", "doomed", "-n", "scratch", "--from-literal=a=b")
			// The namespace controller empties the namespace before the namespace object goes.
			cp.kubectl(t, "", "delete", "namespace", "scratch", "--timeout=120s")
			if _, err := cp.client.CoreV1().Namespaces().Get(ctx, "scratch", getOpts); !apierrors.IsNotFound(err) {
				t.Fatalf("namespace scratch still there after deletion: %v", err)
			}

			keys := rctl(t, rkv, "get", "/registry", "--prefix", "--keys-only")
			for _, want := range []string{
				"/registry/deployments/default/web", "/registry/deployments/default/api",
				"/registry/replicasets/default/web-", "/registry/pods/default/web-",
				"/registry/pods/default/api-", "/registry/services/specs/default/web",
				"/registry/configmaps/default/settings", "/registry/secrets/default/token",
				"/registry/minions/node-1", "/registry/namespaces/default",
				"/registry/serviceaccounts/default/default",
			} {
				if !strings.Contains(keys, want) {
					t.Errorf("rctl get /registry --prefix --keys-only lacks %s", want)
				}
			}
			decoded := rctl(t, rkv, "get", "/registry/", "--prefix", "-w", "k8s")
			for _, want := range []string{
				"/registry/configmaps/default/settings v1 ConfigMap default/settings\n",
				"/registry/deployments/default/web apps/v1 Deployment default/web\n",
				"/registry/minions/node-1 v1 Node node-1\n",
				"/registry/secrets/default/token v1 Secret default/token\n",
				"/registry/services/specs/default/web v1 Service default/web\n",
			} {
				if !strings.Contains(decoded, want) {
					t.Errorf("rctl get -w k8s lacks %q:\n%s", want, decoded)
				}
			}
			if strings.Contains(keys, "/scratch") {
				t.Errorf("keys of the deleted namespace remain:\n%s", grepLines(keys, "scratch"))
			}

			checkEtcdHealth(t, cp)
			checkConsistentListFromCache(t, cp)
		})
	}
}

// checkEtcdHealth: the apiserver's own etcd checks pass on /livez and /readyz.
func checkEtcdHealth(t testing.TB, cp *controlPlane) {
	for path, checks := range map[string][]string{
		"/livez":  {"[+]etcd ok"},
		"/readyz": {"[+]etcd ok", "[+]etcd-readiness ok"},
	} {
		code, body, err := cp.healthz(path)
		if err != nil || code != 200 {
			t.Fatalf("%s: %d %v\n%s", path, code, err, body)
		}
		for _, c := range checks {
			if !strings.Contains(body, c) {
				t.Errorf("%s lacks %q:\n%s", path, c, body)
			}
		}
	}
}

// checkConsistentListFromCache: rkv's version passes the apiserver's RequestWatchProgress
// check, so a consistent LIST is served from the watch cache (fallback="false"), which needs
// rkv to answer progress requests.
func checkConsistentListFromCache(t testing.TB, cp *controlPlane) {
	re := regexp.MustCompile(`apiserver_watch_cache_consistent_read_total\{fallback="(\w+)",group="",resource="configmaps",success="true"\} (\d+)`)
	eventually(t, time.Minute, "a consistent LIST of configmaps served from the watch cache", func() (bool, string) {
		if _, err := cp.client.CoreV1().ConfigMaps("").List(context.Background(), metav1.ListOptions{}); err != nil {
			return false, err.Error()
		}
		metrics, err := cp.client.RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
		if err != nil {
			return false, err.Error()
		}
		found := re.FindAllStringSubmatch(string(metrics), -1)
		for _, m := range found {
			if m[1] == "false" && m[2] != "0" {
				return true, ""
			}
		}
		return false, fmt.Sprint(found)
	})
}

func grepLines(text, needle string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, needle) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// createConfigMaps creates each named configmap, retrying through failures (a member being
// killed); it returns the names whose creation the apiserver acknowledged, and the error that
// outlasted a minute of retries, if any.
func createConfigMaps(cp *controlPlane, names []string) ([]string, error) {
	return createConfigMapsCounting(cp, names, nil)
}

// createConfigMapsCounting is createConfigMaps that also counts acknowledgements in `acks`.
func createConfigMapsCounting(cp *controlPlane, names []string, acks *atomic.Int32) ([]string, error) {
	var acked []string
	for _, name := range names {
		deadline := time.Now().Add(time.Minute)
		for {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"n": name}}
			_, err := cp.client.CoreV1().ConfigMaps("default").Create(context.Background(), cm, metav1.CreateOptions{})
			if err == nil || apierrors.IsAlreadyExists(err) {
				acked = append(acked, name)
				if acks != nil {
					acks.Add(1)
				}
				break
			}
			if time.Now().After(deadline) {
				return acked, fmt.Errorf("creating %s: %w", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return acked, nil
}

func names(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s-%03d", prefix, i))
	}
	return out
}

// directConfigMaps reads /registry/configmaps/default/ straight from rkv: name → mod_revision.
func directConfigMaps(t testing.TB, rkv *rkvtest.Cluster) map[string]int64 {
	cli := rkv.Client(t)
	resp, err := cli.Get(context.Background(), "/registry/configmaps/default/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), "/registry/configmaps/default/")] = kv.ModRevision
	}
	return out
}

// apiConfigMaps lists configmaps in default through the apiserver: name → resourceVersion.
func apiConfigMaps(t testing.TB, cp *controlPlane, rv string) map[string]int64 {
	list, err := cp.client.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{ResourceVersion: rv})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, cm := range list.Items {
		var rv int64
		fmt.Sscan(cm.ResourceVersion, &rv)
		out[cm.Name] = rv
	}
	return out
}

func TestLeaderKilledUnderApiserver(t *testing.T) {
	rkv := rkvtest.StartCluster(t, 3)
	cp := startControlPlane(t, rkv.Endpoints())
	registerNodes(t, cp)
	cp.kubectl(t, "", "create", "deployment", "web", "--image=nginx", "--replicas=3")
	waitBound(t, cp, "web", 3)

	// Writes keep flowing while the leader dies: the controllers scale the deployment and the
	// test creates configmaps.
	var wg sync.WaitGroup
	var acked []string
	var createErr error
	var acks atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		acked, createErr = createConfigMapsCounting(cp, names("cm", 0, 60), &acks)
	}()
	cp.kubectl(t, "", "scale", "deployment", "web", "--replicas=6")
	leader := rkv.Leader(t)
	eventually(t, time.Minute, "20 configmaps created", func() (bool, string) {
		return acks.Load() >= 20, fmt.Sprint(acks.Load())
	})
	leader.Kill()
	t.Logf("killed the rkv leader %s after %d configmaps", leader.Name, acks.Load())
	wg.Wait()
	if createErr != nil {
		t.Fatal(createErr)
	}
	waitBound(t, cp, "web", 6)
	cp.kubectl(t, "", "scale", "deployment", "web", "--replicas=4")
	waitBound(t, cp, "web", 4)
	cp.waitHealthy(t, "/readyz")

	if len(acked) != 60 {
		t.Fatalf("only %d of 60 configmaps acknowledged", len(acked))
	}
	direct := directConfigMaps(t, rkv)
	listed := apiConfigMaps(t, cp, "")
	for _, name := range acked {
		if _, ok := direct[name]; !ok {
			t.Errorf("acknowledged configmap %s lost in rkv", name)
		}
		if _, ok := listed[name]; !ok {
			t.Errorf("acknowledged configmap %s missing from the apiserver's LIST", name)
		}
	}
}

func TestRestartUnderApiserver(t *testing.T) {
	rkv := rkvtest.StartCluster(t, 1)
	cp := startControlPlane(t, rkv.Endpoints())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	before, err := createConfigMaps(cp, names("before", 0, 20))
	if err != nil {
		t.Fatal(err)
	}
	list, err := cp.client.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A watch through the apiserver from the LIST's revision; RetryWatcher resumes it from the
	// last revision it saw, as a reflector does, across the rkv restart.
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return cp.client.CoreV1().ConfigMaps("default").Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Stop()

	m := rkv.Members[0]
	m.Kill()
	m.Start(t)
	m.WaitReady(t)
	cp.waitHealthy(t, "/readyz")
	after, err := createConfigMaps(cp, names("after", 0, 20))
	if err != nil {
		t.Fatal(err)
	}

	// Every configmap created after the LIST arrives once, in order, with its revision.
	var seen []string
	var lastRV int64
	for len(seen) < len(after) {
		select {
		case ev, ok := <-rw.ResultChan():
			if !ok {
				t.Fatalf("watch ended after %v", seen)
			}
			if ev.Type == watch.Bookmark {
				continue
			}
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok || ev.Type != watch.Added {
				t.Fatalf("unexpected event %s %T", ev.Type, ev.Object)
			}
			var rv int64
			fmt.Sscan(cm.ResourceVersion, &rv)
			if rv <= lastRV {
				t.Fatalf("revision went back: %d after %d", rv, lastRV)
			}
			lastRV = rv
			seen = append(seen, cm.Name)
		case <-ctx.Done():
			t.Fatalf("watch delivered only %v", seen)
		}
	}
	if strings.Join(seen, ",") != strings.Join(after, ",") {
		t.Fatalf("watch events %v, want %v", seen, after)
	}

	// The watch cache agrees with rkv: a consistent LIST (served from the cache once it is
	// fresh) and a LIST at resourceVersion 0 (the cache as it is) both equal a direct read.
	direct := directConfigMaps(t, rkv)
	for _, rv := range []string{"", "0"} {
		eventually(t, 30*time.Second, "LIST rv="+rv+" equal to rkv's keys", func() (bool, string) {
			listed := apiConfigMaps(t, cp, rv)
			return fmt.Sprint(sorted(listed)) == fmt.Sprint(sorted(direct)), fmt.Sprintf("%v != %v", sorted(listed), sorted(direct))
		})
	}
	for _, name := range append(before, after...) {
		if _, ok := direct[name]; !ok {
			t.Errorf("configmap %s lost across the restart", name)
		}
	}
}

func sorted(m map[string]int64) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s@%d", k, v))
	}
	sort.Strings(out)
	return out
}
