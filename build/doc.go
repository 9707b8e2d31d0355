// Package build turns a parsed Dockerfile into an image: it orders the
// stages, derives a cache key for every step, runs what the cache does not
// have (RUN in build/sandbox, COPY and ADD with build/copier, each on a
// snapshot), commits every change as a content-addressed layer and writes
// the image's config and manifest into the store.
//
// The package is the scheduler and the step executors over one job's
// state, and that is why it is the size it is (about 4,000 lines; the
// largest file, stage.go, ~520): the job (build.go) holds the stages
// started, their state, cache lookups, imported cache and progress; the
// scheduler (build.go, stage.go) starts the stages the target needs, each
// once, and dispatches their steps; and every executor (ops.go for RUN,
// COPY, ADD and the config instructions, mounts.go for RUN --mount,
// inline.go for heredoc and URL sources, image.go for bases, layers.go,
// cacheimport.go and cacheexport.go for the layers of steps and of the
// shared cache) reads and changes that state. Splitting them further
// would mean passing the job around through interfaces only this package
// implements. Everything that does not need the job lives in a package of
// its own that does not import build: the step cache (build/cache),
// --secret values (build/secrets), --ssh agents (build/sshagent),
// --build-context values and OCI layout import (build/namedctx), cache
// mount directories (build/cachemount), ADD downloads (build/fetch), the
// registry client
// (build/registry), store upkeep (build/store), progress rendering
// (build/progress), the sandbox and the copier.
package build
