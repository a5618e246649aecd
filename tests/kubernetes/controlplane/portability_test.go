// Kubernetes across a move from etcd to rkv and back (docs/migrating-from-etcd.md): a real
// kube-apiserver on etcd 3.6.8, an etcd snapshot restored into rkv (one member, then three) with
// `rctl snapshot restore`, and rkv's own snapshot restored into etcd with `etcdutl snapshot
// restore`. After each move the restarted apiserver serves every object with its UID and
// resourceVersion, and a client's watch resumes from the last resourceVersion it saw.
package controlplane

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"rkv.test/kubernetes/rkvtest"
)

const (
	portabilityNS = "portability"
	// The --initial-cluster-token of every restore and every member started on restored data.
	portabilityToken = "portability-cluster"
	eventTimeout     = 30 * time.Second
)

// portabilityAPIServerFlags turn the apiserver's watch cache off for ConfigMaps only, so that
// a ConfigMap watch is served by the storage. With the cache, a restarted apiserver fills it
// with a LIST at the storage's current revision, which its own startup writes (its lease, the
// `kubernetes` endpoints) have already moved past the client's last resourceVersion: it answers
// any watch from before that LIST with 410 "too old resource version", whatever the storage
// holds, etcd included. Without the cache the watch goes to etcd or rkv at that revision, which
// is what the move has to preserve.
var portabilityAPIServerFlags = []string{"--watch-cache-sizes=configmaps#0"}

// object is what a LIST shows of one object: identity, resourceVersion and a summary of its
// content.
type object struct {
	UID     string
	RV      int64
	Content string
}

// objectState maps "Kind namespace/name" to the object.
type objectState map[string]object

// cmEvent is one event of a ConfigMap watch.
type cmEvent struct {
	Type watch.EventType
	Name string
	RV   int64
}

func (e cmEvent) String() string { return fmt.Sprintf("%s %s@%d", e.Type, e.Name, e.RV) }

func parseRV(t testing.TB, rv string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", rv, err)
	}
	return n
}

// listObjects lists every namespace and the Deployments, ConfigMaps and Secrets of the test's
// namespace; it returns them and the greatest list resourceVersion.
func listObjects(t testing.TB, cp *controlPlane) (objectState, int64) {
	t.Helper()
	ctx := context.Background()
	state := objectState{}
	var listRV int64
	add := func(kind, ns, name, uid, rv, content string) {
		state[fmt.Sprintf("%s %s/%s", kind, ns, name)] = object{uid, parseRV(t, rv), content}
	}
	seen := func(rv string) { listRV = max(listRV, parseRV(t, rv)) }
	nss, err := cp.client.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen(nss.ResourceVersion)
	for _, o := range nss.Items {
		add("Namespace", "", o.Name, string(o.UID), o.ResourceVersion, string(o.Status.Phase))
	}
	deps, err := cp.client.AppsV1().Deployments(portabilityNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen(deps.ResourceVersion)
	for _, o := range deps.Items {
		add("Deployment", o.Namespace, o.Name, string(o.UID), o.ResourceVersion,
			fmt.Sprintf("replicas=%d image=%s", *o.Spec.Replicas, o.Spec.Template.Spec.Containers[0].Image))
	}
	cms, err := cp.client.CoreV1().ConfigMaps(portabilityNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen(cms.ResourceVersion)
	for _, o := range cms.Items {
		add("ConfigMap", o.Namespace, o.Name, string(o.UID), o.ResourceVersion, fmt.Sprint(o.Data))
	}
	secrets, err := cp.client.CoreV1().Secrets(portabilityNS).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	seen(secrets.ResourceVersion)
	for _, o := range secrets.Items {
		add("Secret", o.Namespace, o.Name, string(o.UID), o.ResourceVersion, fmt.Sprintf("%q", o.Data))
	}
	return state, listRV
}

// diffStates lists the objects that differ, one line each ("-" wanted, "+" got).
func diffStates(want, got objectState) string {
	keys := map[string]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range got {
		keys[k] = true
	}
	var sortedKeys []string
	for k := range keys {
		sortedKeys = append(sortedKeys, k)
	}
	sort.Strings(sortedKeys)
	var out []string
	for _, k := range sortedKeys {
		w, inWant := want[k]
		g, inGot := got[k]
		switch {
		case !inGot:
			out = append(out, fmt.Sprintf("- %s %+v (missing)", k, w))
		case !inWant:
			out = append(out, fmt.Sprintf("+ %s %+v (unexpected)", k, g))
		case w != g:
			out = append(out, fmt.Sprintf("- %s %+v\n+ %s %+v", k, w, k, g))
		}
	}
	return strings.Join(out, "\n")
}

func (s objectState) maxRV() int64 {
	var m int64
	for _, o := range s {
		m = max(m, o.RV)
	}
	return m
}

// watchConfigMaps opens a watch (not a list) on the test namespace's ConfigMaps from `rv`.
func watchConfigMaps(t testing.TB, cp *controlPlane, rv int64) watch.Interface {
	t.Helper()
	w, err := cp.client.CoreV1().ConfigMaps(portabilityNS).Watch(context.Background(),
		metav1.ListOptions{ResourceVersion: strconv.FormatInt(rv, 10)})
	if err != nil {
		t.Fatalf("watch configmaps from resourceVersion %d: %v", rv, err)
	}
	t.Cleanup(w.Stop)
	return w
}

// nextEvent is the watch's next event other than a bookmark; an ERROR event (410 Gone, "too old
// resource version"), the end of the watch or eventTimeout without an event fails the test.
func nextEvent(t testing.TB, w watch.Interface, what string) cmEvent {
	t.Helper()
	timeout := time.After(eventTimeout)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("%s: the watch ended", what)
			}
			switch ev.Type {
			case watch.Bookmark:
				continue
			case watch.Error:
				err := apierrors.FromObject(ev.Object)
				t.Fatalf("%s: ERROR event (410 Gone: %v): %v", what, apierrors.IsResourceExpired(err) || apierrors.IsGone(err), err)
			}
			cm, ok := ev.Object.(*corev1.ConfigMap)
			if !ok {
				t.Fatalf("%s: %s event of a %T", what, ev.Type, ev.Object)
			}
			return cmEvent{ev.Type, cm.Name, parseRV(t, cm.ResourceVersion)}
		case <-timeout:
			t.Fatalf("%s: no event within %v", what, eventTimeout)
		}
	}
}

// updateConfigMap sets data v=`value` on ConfigMap `name` and returns the updated object.
func updateConfigMap(t testing.TB, cp *controlPlane, name, value string) *corev1.ConfigMap {
	t.Helper()
	ctx := context.Background()
	cm, err := cp.client.CoreV1().ConfigMaps(portabilityNS).Get(ctx, name, getOpts)
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["v"] = value
	cm, err = cp.client.CoreV1().ConfigMaps(portabilityNS).Update(ctx, cm, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update configmap %s: %v", name, err)
	}
	return cm
}

// snapshotSave is `etcdctl snapshot save` through the etcd Go client; it returns the version
// the server reported.
func snapshotSave(t testing.TB, endpoint, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	version, err := snapshot.SaveWithVersion(ctx, zap.NewNop(),
		clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second}, path)
	if err != nil {
		t.Fatalf("snapshot save from %s: %v", endpoint, err)
	}
	return version
}

// storeConfigMaps reads the test namespace's ConfigMap keys straight from the member behind
// `endpoint` (a serializable read: its own store): name → mod revision, and the store's revision.
func storeConfigMaps(t testing.TB, endpoint string) (map[string]int64, int64) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	prefix := "/registry/configmaps/" + portabilityNS + "/"
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		t.Fatalf("get %s from %s: %v", prefix, endpoint, err)
	}
	keys := map[string]int64{}
	for _, kv := range resp.Kvs {
		keys[strings.TrimPrefix(string(kv.Key), prefix)] = kv.ModRevision
	}
	return keys, resp.Header.Revision
}

// storeRevision is the revision of the store behind `endpoint`.
func storeRevision(t testing.TB, endpoint string) int64 {
	t.Helper()
	_, rev := storeConfigMaps(t, endpoint)
	return rev
}

// checkStore compares the ConfigMap keys' mod revisions and the revision of one member, right
// after a restore, with what the snapshot's source served.
func checkStore(t testing.TB, endpoint string, want objectState, wantRev int64) {
	t.Helper()
	got, rev := storeConfigMaps(t, endpoint)
	wanted := map[string]int64{}
	for k, o := range want {
		if name, ok := strings.CutPrefix(k, "ConfigMap "+portabilityNS+"/"); ok {
			wanted[name] = o.RV
		}
	}
	if fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(wanted)) {
		t.Errorf("%s: configmap keys@mod_revision\n got %v\nwant %v", endpoint, sorted(got), sorted(wanted))
	}
	if rev != wantRev {
		t.Errorf("%s: revision %d after the restore, the snapshot's source was at %d", endpoint, rev, wantRev)
	}
}

// continuity is what a client of the apiserver held before a move.
type continuity struct {
	state   objectState // every object as the apiserver served it last
	history []cmEvent   // the ConfigMap events since watchRV
	watchRV int64       // where the recorded watch started (before the first ConfigMap)
	lastRV  int64       // the last resourceVersion the client's watch delivered
	maxRV   int64       // the greatest resourceVersion the client saw, or the source's revision
}

// checkContinuity runs on an apiserver restarted on the moved data: the LIST equals `before`,
// a watch from before the first ConfigMap replays the same history, and a watch resumed from
// the last resourceVersion delivers exactly the MODIFIED event of an update of `update`, newer
// than everything before. It returns what a client holds after that update.
func checkContinuity(t *testing.T, cp *controlPlane, before continuity, update, value string) continuity {
	t.Helper()
	got, listRV := listObjects(t, cp)
	if diff := diffStates(before.state, got); diff != "" {
		t.Errorf("the apiserver on the moved data lists other objects than before the move:\n%s", diff)
	}

	// The watches end before the caller stops the apiserver, whose graceful shutdown would wait
	// for them.
	replay := watchConfigMaps(t, cp, before.watchRV)
	defer replay.Stop()
	for i, want := range before.history {
		if ev := nextEvent(t, replay, fmt.Sprintf("watch from %d, event %d", before.watchRV, i)); ev != want {
			t.Errorf("watch from %d: event %d is %v, before the move it was %v", before.watchRV, i, ev, want)
		}
	}

	resumed := watchConfigMaps(t, cp, before.lastRV)
	defer resumed.Stop()
	updated := updateConfigMap(t, cp, update, value)
	updatedRV := parseRV(t, updated.ResourceVersion)
	ev := nextEvent(t, resumed, fmt.Sprintf("watch resumed from %d", before.lastRV))
	want := cmEvent{watch.Modified, update, updatedRV}
	if ev != want {
		t.Errorf("the watch resumed from %d delivered %v, want %v (the update)", before.lastRV, ev, want)
	}
	if newest := max(before.maxRV, listRV, got.maxRV()); updatedRV <= newest {
		t.Errorf("the update's resourceVersion %d is not above the earlier %d", updatedRV, newest)
	}

	// The client's view after the update: `before` with the updated ConfigMap.
	after := continuity{state: objectState{}, history: append(append([]cmEvent(nil), before.history...), want),
		watchRV: before.watchRV, lastRV: updatedRV}
	for k, o := range before.state {
		after.state[k] = o
	}
	key := fmt.Sprintf("ConfigMap %s/%s", portabilityNS, update)
	after.state[key] = object{string(updated.UID), updatedRV, fmt.Sprint(updated.Data)}
	got, listRV = listObjects(t, cp)
	if diff := diffStates(after.state, got); diff != "" {
		t.Errorf("LIST after the update of %s:\n%s", update, diff)
	}
	after.maxRV = max(updatedRV, listRV, got.maxRV())
	return after
}

// restoreIntoRkv is `rctl snapshot restore` of `snap` into every planned member's data dir.
func restoreIntoRkv(t testing.TB, c *rkvtest.Cluster, snap string) {
	t.Helper()
	for _, m := range c.Members {
		rctl(t, c, "snapshot", "restore", snap, "--name", m.Name, "--data-dir", m.DataDir,
			"--initial-cluster", c.InitialCluster(), "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster-token", portabilityToken)
	}
}

// etcdutl is etcd's offline tool: 3.6.8 built beside etcd when scripts/kubernetes.sh builds it,
// else the etcdutl 3.5.1 scripts/deps.sh installs.
func etcdutl(t testing.TB) string {
	t.Helper()
	home, _ := os.UserHomeDir()
	for _, bin := range []string{filepath.Join(os.Getenv("KUBE_BIN_DIR"), "etcdutl"), filepath.Join(home, ".local", "bin", "etcdutl")} {
		if _, err := os.Stat(bin); err == nil {
			return bin
		}
	}
	bin, err := exec.LookPath("etcdutl")
	if err != nil {
		t.Fatal("etcdutl not found in $KUBE_BIN_DIR, ~/.local/bin or $PATH (scripts/deps.sh installs it)")
	}
	return bin
}

func runTool(t testing.TB, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestKubernetesPortability(t *testing.T) {
	started := time.Now()
	work := t.TempDir()
	etcdSnap := filepath.Join(work, "etcd.db")
	rkvSnap := filepath.Join(work, "rkv.db")
	var onEtcd, onRkv continuity
	var etcdRev, rkvRev int64 // the stores' revisions when their snapshots were taken

	phase := func(name string, f func(t *testing.T)) {
		phaseStarted := time.Now()
		if !t.Run(name, f) {
			t.FailNow()
		}
		t.Logf("%s: %.1f s", name, time.Since(phaseStarted).Seconds())
	}

	phase("etcd", func(t *testing.T) {
		ctx := context.Background()
		dir := t.TempDir()
		peer := fmt.Sprintf("http://127.0.0.1:%d", rkvtest.FreePort(t))
		endpoint, etcd := startEtcd(t, "etcd0", filepath.Join(dir, "etcd0.etcd"), peer,
			"--initial-cluster-token="+portabilityToken)
		cp := startAPIServer(t, []string{endpoint}, portabilityAPIServerFlags...)

		if _, err := cp.client.CoreV1().Namespaces().Create(ctx,
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: portabilityNS}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		empty, err := cp.client.CoreV1().ConfigMaps(portabilityNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		onEtcd.watchRV = parseRV(t, empty.ResourceVersion)
		w := watchConfigMaps(t, cp, onEtcd.watchRV)

		replicas := int32(2)
		labels := map[string]string{"app": "web"}
		if _, err := cp.client.AppsV1().Deployments(portabilityNS).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.k8s.io/pause:3.10"}}}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// 20 ConfigMaps, one updated and one deleted: the watch history has all three kinds.
		var want []cmEvent
		wantState := map[string]int64{}
		for _, name := range names("cm", 0, 20) {
			cm, err := cp.client.CoreV1().ConfigMaps(portabilityNS).Create(ctx, &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"n": name}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, cmEvent{watch.Added, name, parseRV(t, cm.ResourceVersion)})
			wantState[name] = parseRV(t, cm.ResourceVersion)
		}
		cm := updateConfigMap(t, cp, "cm-005", "etcd")
		want = append(want, cmEvent{watch.Modified, "cm-005", parseRV(t, cm.ResourceVersion)})
		wantState["cm-005"] = parseRV(t, cm.ResourceVersion)
		if err := cp.client.CoreV1().ConfigMaps(portabilityNS).Delete(ctx, "cm-019", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		delete(wantState, "cm-019")
		if _, err := cp.client.CoreV1().Secrets(portabilityNS).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "token"}, Data: map[string][]byte{"token": []byte("s3cr3t")}},
			metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}

		for i := range want {
			ev := nextEvent(t, w, fmt.Sprintf("watch on etcd, event %d", i))
			onEtcd.history = append(onEtcd.history, ev)
			if ev != want[i] {
				t.Fatalf("watch on etcd: event %d is %v, want %v", i, ev, want[i])
			}
		}
		ev := nextEvent(t, w, "watch on etcd, the deletion")
		if ev.Type != watch.Deleted || ev.Name != "cm-019" || ev.RV <= want[len(want)-1].RV {
			t.Fatalf("watch on etcd: %v, want the deletion of cm-019", ev)
		}
		onEtcd.history = append(onEtcd.history, ev)
		onEtcd.lastRV = ev.RV
		w.Stop()

		var listRV int64
		onEtcd.state, listRV = listObjects(t, cp)
		for _, key := range []string{"Namespace /" + portabilityNS, "Namespace /default", "Namespace /kube-system",
			"Deployment " + portabilityNS + "/web", "Secret " + portabilityNS + "/token"} {
			if _, ok := onEtcd.state[key]; !ok {
				t.Errorf("the LIST on etcd lacks %s", key)
			}
		}
		listed := map[string]int64{}
		for k, o := range onEtcd.state {
			if name, ok := strings.CutPrefix(k, "ConfigMap "+portabilityNS+"/"); ok {
				listed[name] = o.RV
			}
		}
		if fmt.Sprint(sorted(listed)) != fmt.Sprint(sorted(wantState)) {
			t.Fatalf("configmaps listed on etcd %v, created %v", sorted(listed), sorted(wantState))
		}

		cp.apiserver.stop()
		etcdRev = storeRevision(t, endpoint)
		onEtcd.maxRV = max(etcdRev, listRV, onEtcd.state.maxRV())
		version := snapshotSave(t, endpoint, etcdSnap)
		etcd.stop()
		t.Logf("etcd snapshot at revision %d (server version %q); %d objects, watch at %d, last event %d",
			etcdRev, version, len(onEtcd.state), onEtcd.watchRV, onEtcd.lastRV)
	})

	phase("rkv-1-member", func(t *testing.T) {
		rkv := rkvtest.NewCluster(t, 1)
		restoreIntoRkv(t, rkv, etcdSnap)
		rkv.Start(t, "--initial-cluster-token", portabilityToken)
		m := rkv.Members[0]
		checkStore(t, m.ClientURL, onEtcd.state, etcdRev)
		cp := startAPIServer(t, rkv.Endpoints(), portabilityAPIServerFlags...)
		onRkv = checkContinuity(t, cp, onEtcd, "cm-000", "rkv-1")

		cp.apiserver.stop()
		rkvRev = storeRevision(t, m.ClientURL)
		onRkv.maxRV = max(onRkv.maxRV, rkvRev)
		version := snapshotSave(t, m.ClientURL, rkvSnap)
		m.Stop()
		t.Logf("rkv snapshot at revision %d (server version %q); update at %d", rkvRev, version, onRkv.lastRV)
	})

	phase("rkv-3-members", func(t *testing.T) {
		rkv := rkvtest.NewCluster(t, 3)
		restoreIntoRkv(t, rkv, etcdSnap)
		rkv.Start(t, "--initial-cluster-token", portabilityToken)
		for _, m := range rkv.Members {
			checkStore(t, m.ClientURL, onEtcd.state, etcdRev)
		}
		cp := startAPIServer(t, rkv.Endpoints(), portabilityAPIServerFlags...)
		checkContinuity(t, cp, onEtcd, "cm-000", "rkv-3")
	})

	phase("back-to-etcd", func(t *testing.T) {
		dir := t.TempDir()
		peer := fmt.Sprintf("http://127.0.0.1:%d", rkvtest.FreePort(t))
		dataDir := filepath.Join(dir, "etcd1.etcd")
		bin := etcdutl(t)
		t.Logf("%s: %s", bin, strings.Join(strings.Fields(runTool(t, bin, "version")), " "))
		runTool(t, bin, "snapshot", "restore", rkvSnap, "--name", "etcd1", "--data-dir", dataDir,
			"--initial-cluster", "etcd1="+peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster-token", portabilityToken)
		endpoint, _ := startEtcd(t, "etcd1", dataDir, peer, "--initial-cluster-token="+portabilityToken)
		checkStore(t, endpoint, onRkv.state, rkvRev)
		cp := startAPIServer(t, []string{endpoint}, portabilityAPIServerFlags...)
		// The history replayed from the first watch's start now includes rkv's update, and the
		// watch resumes from rkv's last resourceVersion.
		checkContinuity(t, cp, onRkv, "cm-001", "etcd-again")
	})
	t.Logf("whole test: %.1f s", time.Since(started).Seconds())
}
