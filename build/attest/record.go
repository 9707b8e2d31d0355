package attest

import (
	"regexp"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Record is what a build tells provenance about itself. The build fills it
// as it goes; Provenance reads it once the build is done.
type Record struct {
	// DockerfileName is the Dockerfile's file name (configSource.path).
	DockerfileName string
	// Dockerfile is its content (mode=max: buildkit_metadata.source).
	Dockerfile []byte
	// Context is the context's source when it is not a local directory: a
	// git repository (URL with #ref:subdir) and its commit; nil for a
	// local context, which makes the dependencies incomplete.
	Context  *GitSource
	Target   string
	NoCache  bool
	Args     map[string]string // --build-arg values, unfiltered
	Labels   map[string]string // --label values
	Secrets  []IDRef           // the secrets RUN mounted (optional unless required=true)
	SSH      []IDRef           // the ssh sockets RUN mounted
	Images   []ImageSource     // base and --from images, in first-use order
	HTTP     []HTTPSource      // ADD URLs
	Git      []GitSource       // ADD git repositories and git contexts
	Steps    []Step            // every instruction that made a filesystem state, in order
	Platform v1.Platform       // the image's platform
	// BuilderPlatform is the platform builder ran on (os/arch).
	BuilderPlatform string
	BuilderVersion  string
	InvocationID    string
	Started         time.Time
	Finished        time.Time
	// Network is true when a RUN had network access (not --network=none),
	// which makes the build not hermetic.
	Network bool
}

// ImageSource is an image the build read, by the reference the
// Dockerfile gave and the manifest digest it resolved to.
type ImageSource struct {
	Ref      string
	Platform v1.Platform
	Digest   v1.Hash
}

// HTTPSource is a URL ADD downloaded and its content digest ("algo:hex").
type HTTPSource struct {
	URL    string
	Digest string
}

// GitSource is a git repository and the commit that was checked out.
type GitSource struct {
	URL    string
	Commit string
}

// Step is one instruction of the build: its position, the steps it read
// (indexes into Record.Steps), and the layers of the filesystem it left.
type Step struct {
	Stage  int
	Line   int // first Dockerfile line, 1-based; 0 for none
	End    int // last line
	Text   string
	Inputs []int
	Layers []v1.Descriptor
}

// secretLike is BuildKit's SecretsUsedInArgOrEnv rule
// (frontend/dockerfile/dockerfile2llb/validations.go): a name whose first
// or last underscore-separated word, or whole self, is a secret word, and
// none of whose words is an allowed one.
var (
	secretLike    = regexp.MustCompile(`(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)`)
	secretAllowed = regexp.MustCompile(`(?i)(?:_|^)(?:public|file|version)(?:_|$)`)
)

// SecretLike reports whether a build arg name looks like it holds a
// secret, by BuildKit's rule; such args never appear in provenance.
func SecretLike(name string) bool {
	return secretLike.MatchString(name) && !secretAllowed.MatchString(name)
}

// proxyArgs are the build args Docker predefines for proxies; they may
// hold credentials (http://user:pass@proxy) and never appear in
// provenance, as they never appear in the image.
var proxyArgs = map[string]bool{
	"HTTP_PROXY": true, "HTTPS_PROXY": true, "FTP_PROXY": true, "NO_PROXY": true, "ALL_PROXY": true,
}

// Disclosed reports whether provenance may name a build arg: neither a
// proxy arg nor secret-like.
func Disclosed(name string) bool {
	return !proxyArgs[strings.ToUpper(name)] && !SecretLike(name)
}
