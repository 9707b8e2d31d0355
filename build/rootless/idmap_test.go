package rootless

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestLookupMapping(t *testing.T) {
	for _, tc := range []struct {
		name           string
		user           User
		subuid, subgid string
		want           Mapping
		wantErr        error
	}{
		{
			name:   "by name, several ranges in file order",
			user:   User{Name: "alice", UID: 1000, GID: 1000},
			subuid: "testdata/subuid", subgid: "testdata/subgid",
			want: Mapping{
				UIDs: []IDRange{{0, 1000, 1}, {1, 100000, 65536}, {65537, 200000, 10}},
				GIDs: []IDRange{{0, 1000, 1}, {1, 100000, 65536}},
			},
		},
		{
			name:   "by number when the name has no line",
			user:   User{Name: "carol", UID: 1001, GID: 50},
			subuid: "testdata/subuid", subgid: "testdata/subuid",
			want: Mapping{
				UIDs: []IDRange{{0, 1001, 1}, {1, 300000, 1000}},
				GIDs: []IDRange{{0, 50, 1}, {1, 300000, 1000}},
			},
		},
		{
			name:   "no uid range",
			user:   User{Name: "dave", UID: 1002, GID: 1002},
			subuid: "testdata/subuid", subgid: "testdata/subgid", wantErr: ErrNoSubIDs,
		},
		{
			name:   "no gid range",
			user:   User{Name: "bob", UID: 1003, GID: 1003},
			subuid: "testdata/subuid", subgid: "testdata/subgid", wantErr: ErrNoSubIDs,
		},
		{
			name:   "missing file",
			user:   User{Name: "alice", UID: 1000, GID: 1000},
			subuid: "testdata/absent", subgid: "testdata/subgid", wantErr: ErrNoSubIDs,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LookupMapping(tc.user, tc.subuid, tc.subgid)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseSubIDsCapsAt32Bits(t *testing.T) {
	in := "u:0:4294967295\nu:10:10\n"
	got, err := parseSubIDs(strings.NewReader(in), "u", 7)
	if err != nil {
		t.Fatal(err)
	}
	// With id 0 for the user, the first range would overflow the id space.
	want := []IDRange{{HostID: 10, Size: 10}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestHelperArgs(t *testing.T) {
	got := helperArgs(42, []IDRange{{0, 1000, 1}, {1, 100000, 65536}})
	want := []string{"42", "0", "1000", "1", "1", "100000", "65536"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
