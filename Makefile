# builder: the two front-door targets are `make` (build bin/builder) and `make test`.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
PKGS    := ./...

.PHONY: all build example test test-short bench fuzz vet lint fmt clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/builder ./cmd/builder

# Builds builder, then the example image (needs root and Debian's busybox-static).
example: build
	@test -x /bin/busybox || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static)
	cp /bin/busybox examples/hello/busybox
	./bin/builder build -t hello -o type=oci,dest=hello.tar examples/hello
	./bin/builder images

# Tests need root (namespaces, mounts), busybox-static, umoci and skopeo: see .ci/run.
test: build lint
	$(GO) test -count=1 -timeout 45m $(PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

# Benchmarks print their figures; nothing is asserted. The first runs
# issue 19's workloads through the CLI and prints medians, peak RSS and this
# machine's floors (BENCH_ROUNDS=3, BENCH_SKIP_BIG=1 leaves out the 1 GiB
# RUN, BENCH_OLD=path/to/builder interleaves another binary, BENCH_ONLY=
# copy,big picks workloads); docs/performance.md reads its table.
# BENCH_LAYER_TARS=a.tar:b.tar gives BenchmarkGzipWriters real layer tars.
bench: build
	cd cmd/builder && $(GO) test -run '^$$' -bench '^BenchmarkCLI(Workloads|RunCost)$$' -benchtime 1x -timeout 60m .
	$(GO) test -run '^$$' -bench . -benchtime 3x -timeout 60m ./snapshot/content/ ./build/sandbox/ ./export/ ./build/store/
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./build/ ./build/push/

# Fuzzes the layer extractor (needs root) and the Dockerfile parser for
# FUZZTIME each; not part of make test. Each input that finds new coverage
# is minimized for at most 20 runs: the default, 60 s per input, spent on
# KB-sized seed tars, stalled the run with no execs reported.
FUZZTIME ?= 10s
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzApply$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 20x ./snapshot/archive/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 20x ./parser/

vet:
	$(GO) vet $(PKGS)

# vet, staticcheck and goimports (-local builder) must be clean. The tools
# are pinned and run from the Go module proxy's copies; go.mod stays free
# of them.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
GOIMPORTS   ?= golang.org/x/tools/cmd/goimports@v0.52.0
lint: vet
	$(GO) run $(STATICCHECK) $(PKGS)
	@out=$$($(GO) run $(GOIMPORTS) -local builder -l $$(git ls-files '*.go' | grep -v '^testdata/')); \
	if [ -n "$$out" ]; then echo "goimports -local builder would change:"; echo "$$out"; exit 1; fi

fmt:
	$(GO) run $(GOIMPORTS) -local builder -w $$(git ls-files '*.go' | grep -v '^testdata/')

clean:
	rm -rf bin
