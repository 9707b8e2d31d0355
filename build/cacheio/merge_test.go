package cacheio

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"builder/build/cache"
)

// rec is a record with key k, a layer of size bytes named by layer (no
// layer when layer is ""), created at minute created.
func rec(k, layer string, size int64, created int) cache.Record {
	r := cache.Record{Key: key(k), Created: time.Unix(int64(created)*60, 0).UTC()}
	if layer == "" {
		r.Empty = true
		return r
	}
	r.Digest, r.DiffID, r.Size, r.MediaType = hash(layer), hash("diff "+layer), size, string(mediaGzip)
	return r
}

const mediaGzip = "application/vnd.oci.image.layer.v1.tar+gzip"

func key(s string) cache.Key { return cache.Key(hash("key " + s).Hex) }

func keysOf(c Config) []cache.Key {
	var out []cache.Key
	for _, r := range c.Records {
		out = append(out, r.Key)
	}
	slices.Sort(out)
	return out
}

func keys(names ...string) []cache.Key {
	var out []cache.Key
	for _, n := range names {
		out = append(out, key(n))
	}
	slices.Sort(out)
	return out
}

func minute(m int) time.Time { return time.Unix(int64(m)*60, 0).UTC() }

func TestMerge(t *testing.T) {
	now := minute(100)
	theirs := Config{
		Records: []cache.Record{rec("a", "la", 10, 1), rec("shared", "old", 10, 1), rec("e", "", 0, 1)},
		Used:    map[cache.Key]time.Time{key("a"): minute(50), key("shared"): minute(60), key("e"): minute(70)},
		Mounts:  []Mount{{ID: "m1", Digest: hash("m1"), DiffID: hash("dm1"), MediaType: mediaGzip}},
		Sums:    map[string]string{hash("s1").Hex: hash("x").String()},
	}
	ours := Config{
		Records: []cache.Record{rec("b", "lb", 10, 2), rec("shared", "new", 10, 2)},
		Mounts:  []Mount{{ID: "m1", Digest: hash("m1b"), DiffID: hash("dm1b"), MediaType: mediaGzip}},
		Sums:    map[string]string{hash("s2").Hex: hash("y").String()},
	}
	m := Merge(ours, theirs, now)
	if got, want := keysOf(m), keys("a", "b", "shared", "e"); !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
	for _, r := range m.Records {
		if r.Key == key("shared") && r.Digest != hash("new") {
			t.Errorf("shared record: layer %s, want the newer record's", r.Digest)
		}
	}
	for k, want := range map[string]time.Time{"a": minute(50), "b": now, "shared": now, "e": minute(70)} {
		if got := m.Used[key(k)]; !got.Equal(want) {
			t.Errorf("last use of %s: %v, want %v", k, got, want)
		}
	}
	if len(m.Mounts) != 1 || m.Mounts[0].Digest != hash("m1b") || len(m.Sums) != 2 {
		t.Errorf("mounts %+v, sums %v", m.Mounts, m.Sums)
	}
	// An older record of ours does not replace a newer one of theirs.
	m = Merge(Config{Records: []cache.Record{rec("shared", "older", 10, 0)}}, theirs, now)
	for _, r := range m.Records {
		if r.Key == key("shared") && r.Digest != hash("old") {
			t.Errorf("shared record: layer %s, want theirs (newer)", r.Digest)
		}
	}
	if _, err := Encode(m); err != nil {
		t.Errorf("merged config does not encode: %v", err)
	}
	// Merging is idempotent.
	if again := Merge(m, m, now); !slices.Equal(keysOf(again), keysOf(m)) {
		t.Errorf("merge with itself changed the keys")
	}
}

func TestBound(t *testing.T) {
	// Five records used at minutes 1..5; c and d share a layer.
	c := Config{Used: map[cache.Key]time.Time{}}
	for i, n := range []string{"a", "b", "c", "d", "e"} {
		layer := "l" + n
		if n == "d" {
			layer = "lc"
		}
		c.Records = append(c.Records, rec(n, layer, 100, 0))
		c.Used[key(n)] = minute(i + 1)
	}
	c.Records = append(c.Records, rec("never", "lnever", 100, 0)) // no last use: oldest
	tests := []struct {
		maxRecords int
		maxSize    int64
		want       []string
	}{
		{0, 0, []string{"a", "b", "c", "d", "e", "never"}},
		{10, 10000, []string{"a", "b", "c", "d", "e", "never"}},
		{3, 0, []string{"c", "d", "e"}},
		{1, 0, []string{"e"}},
		{0, 300, []string{"b", "c", "d", "e"}}, // c and d share 100 bytes
		{0, 250, []string{"c", "d", "e"}},
		{0, 50, nil},
		{3, 150, []string{"e"}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d-%d", tt.maxRecords, tt.maxSize), func(t *testing.T) {
			b := Bound(c, tt.maxRecords, tt.maxSize)
			if got := keysOf(b); !slices.Equal(got, keys(tt.want...)) {
				t.Errorf("kept %d records, want %v", len(got), tt.want)
			}
			for k := range b.Used {
				if !slices.Contains(keysOf(b), k) {
					t.Errorf("last use of evicted key %s kept", k)
				}
			}
		})
	}
}
