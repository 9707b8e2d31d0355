package seccomp

import (
	"runtime"
	"slices"
	"testing"
)

// TestCompileRoundTrip checks that the filters Compile sends to the init
// decode to the very program Install used to build in the init.
func TestCompileRoundTrip(t *testing.T) {
	profile, ok := seccompDefaultProfile(runtime.GOARCH)
	if !ok {
		t.Skip("no seccomp table for " + runtime.GOARCH)
	}
	kernel, err := kernelVersion()
	if err != nil {
		t.Fatal(err)
	}
	for _, chroot := range []bool{false, true} {
		f, err := Compile(chroot)
		if err != nil {
			t.Fatal(err)
		}
		p := profile
		if chroot {
			p = withChrootRules(profile, false)
		}
		want, err := seccompProgram(p, kernel)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeFilter(f.Main)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("chroot %t: the decoded filter differs from the compiled one", chroot)
		}
		if notify := f.Notify != nil; notify != (chroot && kernelAtLeast(kernel, [2]uint8{5, 5})) {
			t.Errorf("chroot %t: notifying filter present: %t", chroot, notify)
		}
	}
}

// TestInstallFiltersRefuses checks that filters the init cannot trust are
// refused rather than leaving the command without a filter: none at all
// (a config that lost them), and programs of impossible sizes.
func TestInstallFiltersRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Filters
	}{
		{"zero", Filters{}},
		{"notify without main", Filters{Notify: make([]byte, 8)}},
		{"torn", Filters{Main: make([]byte, 12)}},
		{"too long", Filters{Main: make([]byte, 8*(maxInsns+1))}},
	} {
		errc := make(chan error, 1)
		go func() {
			// No UnlockOSThread: no_new_privs stays on this thread,
			// which exits with the goroutine.
			runtime.LockOSThread()
			_, err := InstallFilters(tc.f)
			errc <- err
		}()
		if err := <-errc; err == nil {
			t.Errorf("%s: InstallFilters accepted it", tc.name)
		}
	}
}
