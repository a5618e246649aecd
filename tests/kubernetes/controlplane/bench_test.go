package controlplane

// BenchmarkKubernetes measures a Kubernetes control plane on rkv beside the same control plane
// on etcd 3.6.8 (etcd's own server, built from the Go module proxy), alternating backends
// round by round on this machine. Run by benches/kubernetes.sh; the figures are ratios, the
// machine is noisy.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"rkv.test/kubernetes/rkvtest"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// backend is one etcd-API server under a control plane: its client URL and its process.
type backend struct {
	endpoint string
	pid      int
}

func startBackend(b *testing.B, kind string) backend {
	if kind == "rkv" {
		m := rkvtest.StartCluster(b, 1).Members[0]
		return backend{m.ClientURL, m.Pid()}
	}
	dir := b.TempDir()
	peer := fmt.Sprintf("http://127.0.0.1:%d", rkvtest.FreePort(b))
	client, etcd := startEtcd(b, "default", filepath.Join(dir, "etcd"), peer, "--log-level=warn")
	return backend{client, etcd.cmd.Process.Pid}
}

func rssMiB(pid int) float64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kib, _ := strconv.ParseFloat(f[1], 64)
			return kib / 1024
		}
	}
	return 0
}

// measureRound runs the workloads once on a fresh backend and control plane.
func measureRound(b *testing.B, kind string, configMaps, replicas int) map[string]float64 {
	be := startBackend(b, kind)
	cp := startControlPlane(b, []string{be.endpoint})
	registerNodes(b, cp)
	ctx := context.Background()
	out := map[string]float64{}

	// Create: 16 clients, as a busy controller fleet would.
	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	var failures sync.Map
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bench-%05d", i)},
					Data: map[string]string{"payload": strings.Repeat("x", 256)}}
				if _, err := cp.client.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					failures.Store(i, err)
				}
			}
		}()
	}
	for i := 0; i < configMaps; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	failures.Range(func(k, v any) bool { b.Fatalf("create %v: %v", k, v); return false })
	out["create configmaps (s)"] = time.Since(start).Seconds()

	// List: a consistent LIST of everything, then the same in pages of 500.
	start = time.Now()
	const lists = 10
	for i := 0; i < lists; i++ {
		list, err := cp.client.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
		if err != nil || len(list.Items) < configMaps {
			b.Fatalf("list: %v (%d items)", err, len(list.Items))
		}
	}
	out["list all (ms)"] = float64(time.Since(start).Milliseconds()) / lists
	start = time.Now()
	for i := 0; i < lists; i++ {
		n, cont := 0, ""
		for {
			list, err := cp.client.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{Limit: 500, Continue: cont})
			if err != nil {
				b.Fatal(err)
			}
			n += len(list.Items)
			if cont = list.Continue; cont == "" {
				break
			}
		}
		if n < configMaps {
			b.Fatalf("paged list saw %d items", n)
		}
	}
	out["list pages of 500 (ms)"] = float64(time.Since(start).Milliseconds()) / lists

	start = time.Now()
	cp.kubectl(b, "", "create", "deployment", "bench", "--image=nginx", fmt.Sprintf("--replicas=%d", replicas))
	waitBound(b, cp, "bench", replicas)
	out[fmt.Sprintf("deployment of %d converged (s)", replicas)] = time.Since(start).Seconds()
	out["backend RSS (MiB)"] = rssMiB(be.pid)
	return out
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func BenchmarkKubernetes(b *testing.B) {
	rounds := envInt("RKV_KUBE_BENCH_ROUNDS", 3)
	configMaps := envInt("RKV_KUBE_BENCH_CONFIGMAPS", 1000)
	replicas := envInt("RKV_KUBE_BENCH_REPLICAS", 50)
	results := map[string]map[string][]float64{"rkv": {}, "etcd": {}}
	var metrics []string
	for round := 0; round < rounds; round++ {
		for _, kind := range []string{"rkv", "etcd"} {
			b.Run(fmt.Sprintf("%s/round-%d", kind, round), func(b *testing.B) {
				for name, v := range measureRound(b, kind, configMaps, replicas) {
					if round == 0 && kind == "rkv" {
						metrics = append(metrics, name)
					}
					results[kind][name] = append(results[kind][name], v)
				}
			})
		}
	}
	sort.Strings(metrics)
	fmt.Printf("\n%-34s %22s %22s %8s\n", "workload (median of rounds)", "rkv (min-max)", "etcd 3.6.8 (min-max)", "rkv/etcd")
	type row struct {
		Workload string    `json:"workload"`
		Rkv      []float64 `json:"rkv"`
		Etcd     []float64 `json:"etcd"`
		Ratio    float64   `json:"ratio"`
	}
	var rows []row
	for _, name := range metrics {
		r, e := results["rkv"][name], results["etcd"][name]
		if len(r) == 0 || len(e) == 0 {
			continue
		}
		ratio := median(r) / median(e)
		span := func(v []float64) string {
			s := append([]float64(nil), v...)
			sort.Float64s(s)
			return fmt.Sprintf("%.2f (%.2f-%.2f)", median(v), s[0], s[len(s)-1])
		}
		fmt.Printf("%-34s %22s %22s %8.2f\n", name, span(r), span(e), ratio)
		rows = append(rows, row{name, r, e, ratio})
	}
	fmt.Println("(all lower is better: a ratio below 1 means rkv took less time or memory)")
	if path := os.Getenv("RKV_KUBE_BENCH_JSON"); path != "" {
		data, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
}
