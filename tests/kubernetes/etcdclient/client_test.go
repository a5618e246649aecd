// The etcd Go client (go.etcd.io/etcd/client/v3, the one kube-apiserver links) drives rkv's KV,
// Watch, Lease and Maintenance services: a second client that nobody here wrote.
package etcdclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/util/version"

	"rkv.test/kubernetes/rkvtest"
)

// onClusters runs `body` against a fresh 1-member and a fresh 3-member rkv, with a client
// that dials every member.
func onClusters(t *testing.T, body func(t *testing.T, c *rkvtest.Cluster, cli *clientv3.Client, ctx context.Context)) {
	for _, size := range []int{1, 3} {
		t.Run(fmt.Sprintf("members=%d", size), func(t *testing.T) {
			c := rkvtest.StartCluster(t, size)
			body(t, c, c.Client(t), testContext(t))
		})
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestKV(t *testing.T) {
	onClusters(t, func(t *testing.T, c *rkvtest.Cluster, cli *clientv3.Client, ctx context.Context) {
		put, err := cli.Put(ctx, "/a/1", "one")
		must(t, err)
		first := put.Header.Revision
		ok(t)(cli.Put(ctx, "/a/2", "two"))
		ok(t)(cli.Put(ctx, "/a/1", "uno", clientv3.WithPrevKV()))
		ok(t)(cli.Put(ctx, "/b", "bee"))

		got, err := cli.Get(ctx, "/a/", clientv3.WithPrefix())
		must(t, err)
		if got.Count != 2 || string(got.Kvs[0].Value) != "uno" || got.Kvs[0].Version != 2 ||
			got.Kvs[0].CreateRevision != first || got.Kvs[0].ModRevision != first+2 {
			t.Fatalf("prefix get: %+v", got)
		}
		// A limited range reports the full count and more, as kube-apiserver's paging needs.
		page, err := cli.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithLimit(1))
		must(t, err)
		if page.Count != 3 || !page.More || len(page.Kvs) != 1 {
			t.Fatalf("limited get: count %d more %v kvs %d", page.Count, page.More, len(page.Kvs))
		}
		old, err := cli.Get(ctx, "/a/1", clientv3.WithRev(first))
		must(t, err)
		if string(old.Kvs[0].Value) != "one" {
			t.Fatalf("historical get: %q", old.Kvs[0].Value)
		}
		// The leader has applied every write it acknowledged (a follower may lag, as in etcd).
		serial, err := c.Leader(t).Client(t).Get(ctx, "/b", clientv3.WithSerializable())
		must(t, err)
		if serial.Header.Revision < got.Header.Revision {
			t.Fatalf("serializable read behind a write it follows: %d", serial.Header.Revision)
		}

		// kube-apiserver's GuaranteedUpdate: compare mod_revision, put, else get.
		cur := got.Kvs[0]
		txn, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision("/a/1"), "=", cur.ModRevision)).
			Then(clientv3.OpPut("/a/1", "eins")).
			Else(clientv3.OpGet("/a/1")).Commit()
		must(t, err)
		if !txn.Succeeded {
			t.Fatal("guaranteed update failed on the current revision")
		}
		stale, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision("/a/1"), "=", cur.ModRevision)).
			Then(clientv3.OpPut("/a/1", "lost")).
			Else(clientv3.OpGet("/a/1")).Commit()
		must(t, err)
		kv := stale.Responses[0].GetResponseRange().Kvs[0]
		if stale.Succeeded || string(kv.Value) != "eins" || kv.ModRevision != txn.Header.Revision {
			t.Fatalf("stale update: %+v", stale)
		}

		del, err := cli.Delete(ctx, "/a/", clientv3.WithPrefix(), clientv3.WithPrevKV())
		must(t, err)
		if del.Deleted != 2 || len(del.PrevKvs) != 2 {
			t.Fatalf("delete: %+v", del)
		}
		compact, err := cli.Compact(ctx, del.Header.Revision)
		must(t, err)
		_, err = cli.Get(ctx, "/a/1", clientv3.WithRev(first))
		if !errors.Is(err, rpctypes.ErrCompacted) {
			t.Fatalf("read below the compaction: %v (compact header %v)", err, compact.Header)
		}
		_, err = cli.Get(ctx, "/a/1", clientv3.WithRev(del.Header.Revision+100))
		if !errors.Is(err, rpctypes.ErrFutureRev) {
			t.Fatalf("read of a future revision: %v", err)
		}
		// Above --max-request-bytes (1.5 MiB) and below the client's 2 MiB send limit.
		_, err = cli.Put(ctx, "/big", string(bytes.Repeat([]byte("x"), 1600*1024)))
		if !errors.Is(err, rpctypes.ErrRequestTooLarge) {
			t.Fatalf("a 1.6 MiB put: %v", err)
		}
	})
}

func TestWatch(t *testing.T) {
	onClusters(t, func(t *testing.T, c *rkvtest.Cluster, cli *clientv3.Client, ctx context.Context) {
		start, err := cli.Put(ctx, "/w/x", "1")
		must(t, err)

		wctx := clientv3.WithRequireLeader(ctx)
		wch := cli.Watch(wctx, "/w/", clientv3.WithPrefix(), clientv3.WithPrevKV(),
			clientv3.WithRev(start.Header.Revision), clientv3.WithProgressNotify())
		ok(t)(cli.Put(ctx, "/w/x", "2"))
		ok(t)(cli.Delete(ctx, "/w/x"))

		var events []*clientv3.Event
		for len(events) < 3 {
			resp := <-wch
			must(t, resp.Err())
			events = append(events, resp.Events...)
		}
		if !events[0].IsCreate() || events[1].IsCreate() || !events[1].IsModify() ||
			string(events[1].PrevKv.Value) != "1" || events[2].Type != mvccpb.DELETE ||
			string(events[2].PrevKv.Value) != "2" {
			t.Fatalf("events: %v", events)
		}
		last := events[2].Kv.ModRevision

		// RequestProgress: the answer is a progress notification at the current revision,
		// and nothing at or below it arrives afterwards.
		must(t, cli.RequestProgress(wctx))
		resp := <-wch
		if !resp.IsProgressNotify() || resp.Header.Revision != last {
			t.Fatalf("progress response: %+v", resp)
		}
		put, err := cli.Put(ctx, "/w/y", "3")
		must(t, err)
		resp = <-wch
		if len(resp.Events) != 1 || resp.Events[0].Kv.ModRevision != put.Header.Revision {
			t.Fatalf("event after progress: %+v", resp)
		}

		// A watch from a compacted revision is canceled with the compaction revision.
		ok(t)(cli.Compact(ctx, put.Header.Revision))
		awaitCompacted(t, ctx, c, start.Header.Revision)
		old := cli.Watch(ctx, "/w/", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision))
		resp = <-old
		if !errors.Is(resp.Err(), rpctypes.ErrCompacted) || resp.CompactRevision != put.Header.Revision {
			t.Fatalf("watch below the compaction: %+v", resp)
		}
	})
}

// awaitCompacted waits until every member has applied a compaction past `rev`. Compact
// answers once the member that served it has applied the compaction (as in etcd); a follower
// applies it a moment later, and until then it still has the history, so a watch it serves
// from `rev` would rightly start.
func awaitCompacted(t *testing.T, ctx context.Context, c *rkvtest.Cluster, rev int64) {
	t.Helper()
	for _, m := range c.Members {
		mc := m.Client(t)
		for {
			_, err := mc.Get(ctx, "/", clientv3.WithRev(rev), clientv3.WithSerializable())
			if errors.Is(err, rpctypes.ErrCompacted) {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("member %s never applied the compaction: %v", m.ClientURL, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestLease(t *testing.T) {
	onClusters(t, func(t *testing.T, c *rkvtest.Cluster, cli *clientv3.Client, ctx context.Context) {
		long, err := cli.Grant(ctx, 3660)
		must(t, err)
		ok(t)(cli.Put(ctx, "/l/event", "v", clientv3.WithLease(long.ID)))
		ttl, err := cli.TimeToLive(ctx, long.ID, clientv3.WithAttachedKeys())
		must(t, err)
		if ttl.GrantedTTL != 3660 || len(ttl.Keys) != 1 || string(ttl.Keys[0]) != "/l/event" {
			t.Fatalf("time to live: %+v", ttl)
		}
		ka, err := cli.KeepAliveOnce(ctx, long.ID)
		must(t, err)
		if ka.TTL != 3660 {
			t.Fatalf("keep-alive: %+v", ka)
		}
		leases, err := cli.Leases(ctx)
		must(t, err)
		if len(leases.Leases) != 1 || leases.Leases[0].ID != long.ID {
			t.Fatalf("leases: %+v", leases)
		}
		ok(t)(cli.Revoke(ctx, long.ID))
		if got, _ := cli.Get(ctx, "/l/event"); got == nil || len(got.Kvs) != 0 {
			t.Fatalf("key outlived its revoked lease: %+v", got)
		}
		_, err = cli.Put(ctx, "/l/x", "v", clientv3.WithLease(long.ID))
		if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Fatalf("put with a revoked lease: %v", err)
		}

		// Expiry deletes the attached key with a DELETE event that carries prev_kv.
		short, err := cli.Grant(ctx, 1)
		must(t, err)
		put, err := cli.Put(ctx, "/l/master", "ip", clientv3.WithLease(short.ID))
		must(t, err)
		wch := cli.Watch(ctx, "/l/master", clientv3.WithPrevKV(), clientv3.WithRev(put.Header.Revision+1))
		resp := <-wch
		must(t, resp.Err())
		if len(resp.Events) != 1 || resp.Events[0].Type != mvccpb.DELETE ||
			string(resp.Events[0].PrevKv.Value) != "ip" || resp.Events[0].Kv.ModRevision != put.Header.Revision+1 {
			t.Fatalf("expiry event: %+v", resp)
		}
	})
}

func TestMaintenance(t *testing.T) {
	c := rkvtest.StartCluster(t, 3)
	cli := c.Client(t)
	ctx := testContext(t)
	for i := 0; i < 10; i++ {
		ok(t)(cli.Put(ctx, fmt.Sprintf("/m/%d", i), "v"))
	}
	var hashes []uint32
	for _, ep := range c.Endpoints() {
		st, err := cli.Status(ctx, ep)
		must(t, err)
		// kube-apiserver's RequestWatchProgress check wants a 3.5.13+ or 3.6+ version.
		v, err := version.ParseSemantic(st.Version)
		must(t, err)
		if !v.AtLeast(version.MustParseSemantic("3.5.13")) || st.DbSize == 0 || st.Leader == 0 {
			t.Fatalf("status of %s: %+v", ep, st)
		}
		h, err := cli.HashKV(ctx, ep, 0)
		must(t, err)
		hashes = append(hashes, h.Hash)
		_, err = cli.Defragment(ctx, ep)
		must(t, err)
	}
	if hashes[0] != hashes[1] || hashes[1] != hashes[2] {
		t.Fatalf("members disagree on HashKV: %v", hashes)
	}
	alarms, err := cli.AlarmList(ctx)
	must(t, err)
	if len(alarms.Alarms) != 0 {
		t.Fatalf("alarms: %+v", alarms)
	}
	snap, err := cli.Snapshot(ctx)
	must(t, err)
	defer snap.Close()
	n, err := io.Copy(io.Discard, snap)
	must(t, err)
	if n == 0 {
		t.Fatal("empty snapshot")
	}
	members, err := cli.MemberList(ctx)
	must(t, err)
	if len(members.Members) != 3 {
		t.Fatalf("members: %+v", members)
	}
	// MoveLeader is served by the leader only, so it goes there.
	leader := c.Leader(t)
	toLeader := leader.Client(t)
	for _, m := range c.Members {
		if m != leader {
			st, err := cli.Status(ctx, m.ClientURL)
			must(t, err)
			_, err = toLeader.MoveLeader(ctx, st.Header.MemberId)
			must(t, err)
			if c.Leader(t) != m {
				t.Fatalf("leadership did not move to %s", m.Name)
			}
			break
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ok fails the test on an error from a call whose other result is not needed.
func ok(t *testing.T) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}
