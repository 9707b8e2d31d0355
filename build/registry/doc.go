// Package registry is builder's one way to reach container registries.
//
// A Client is made once per command from the CLI's settings (the
// registries.toml Config, --insecure-registry, credentials) and passed to
// everything that talks to a registry: pulls of base images, pushes, cache
// import and export, `builder diff` and `builder inspect docker://`. It owns
//
//   - credentials: go-containerregistry's authn.DefaultKeychain (which reads
//     $DOCKER_CONFIG/config.json, its credsStore and credHelpers) unless
//     Options.Keychain says otherwise;
//   - the registry configuration (Config, read from registries.toml): which
//     registries are spoken to over plain HTTP (always loopback ones), which
//     use extra certificate authorities or skip verification, and the
//     mirrors a pull tries before the registry itself (never a push);
//   - retries: every request is retried on RetryStatusCodes and on reset
//     connections as DefaultBackoff says, and a blob whose body arrives
//     broken is fetched again (FetchBlob), at most BlobAttempts times;
//   - progress metering of blob downloads and uploads (MeterFunc).
//
// Requests go through go-containerregistry's remote package (one
// remote.Puller per registry, so a repository is authenticated once), and
// errors keep their types: a registry's error answer is a
// *transport.Error for errors.As, and Describe turns any error into the one
// line the CLI prints.
package registry
