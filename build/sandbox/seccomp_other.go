//go:build !amd64

package sandbox

// seccompArchs is empty where no table has been written: the command then
// gets no_new_privs and the default capabilities but no seccomp filter.
var seccompArchs []seccompArch
