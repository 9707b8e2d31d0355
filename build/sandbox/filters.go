package sandbox

import (
	"sync"

	"builder/build/sandbox/seccomp"
)

// compiledFilters are the seccomp filters of namespace mode ([0]) and
// chroot mode ([1]), each compiled once per process and sent to every
// init (initConfig.Seccomp), which then only loads them.
var compiledFilters = [2]func() (seccomp.Filters, error){
	sync.OnceValues(func() (seccomp.Filters, error) { return seccomp.Compile(false) }),
	sync.OnceValues(func() (seccomp.Filters, error) { return seccomp.Compile(true) }),
}

// filtersFor returns the compiled seccomp filters of a run in chroot
// isolation or not.
func filtersFor(chroot bool) (seccomp.Filters, error) {
	if chroot {
		return compiledFilters[1]()
	}
	return compiledFilters[0]()
}
