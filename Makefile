# volume-agent: the two commands that do everything are `make run` and `make test`.

GO        ?= go
BIN_DIR   := $(CURDIR)/bin
BINARY    := $(BIN_DIR)/volume-agent
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/volume-agent/volume-agent/cmd/volume-agent/app.version=$(VERSION)
# The embedded default root dir of `make run`, inside the repo.
RUN_DIR   := $(CURDIR)/.run
BENCH_COUNT ?= 6
BENCHSTAT := golang.org/x/perf/cmd/benchstat@v0.0.0-20260908200009-22c9c6c9d4da

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/volume-agent
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BINARY) ./cmd/volume-agent

.PHONY: test
test: lint test-outoftree test-csimock ## Run every test: unit (-race), root-only tests on real mounts, end-to-end
	@if [ "$$(id -u)" != 0 ]; then echo "NOTE: not root: tests that make real mounts will skip"; fi
	$(GO) test -race -timeout 12m ./...

.PHONY: test-outoftree
test-outoftree: ## Vet and test the out-of-tree plugin module (test/outoftree)
	cd test/outoftree && $(GO) vet ./... && $(GO) test -race ./...

.PHONY: test-csimock
test-csimock: ## Test the csi plugin and the agent against Kubernetes' CSI mock driver (test/csimock, a module of its own)
	cd test/csimock && $(GO) vet ./... && $(GO) test -race ./...

.PHONY: test-kube
test-kube: ## Run the scenarios on a real single-node Kubernetes (root; builds kube once into ~/.cache/volume-agent)
	./test/kube/run.sh $(KUBE_ARGS)

.PHONY: image
image: ## Build volume-agent's OCI image tarball _output/volume-agent-image.tar (debootstrap rootfs cached in ~/.cache/volume-agent)
	VERSION=$(VERSION) ./test/kube/make-image.sh

.PHONY: new-plugin
new-plugin: ## Generate pkg/volume/$(NAME), a plugin skeleton: make new-plugin NAME=foo
	@test -n "$(NAME)" || { echo "usage: make new-plugin NAME=foo" >&2; exit 2; }
	$(GO) run ./hack/new-plugin -name $(NAME)

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: bench
bench: ## Run the benchmarks (long: the gitRepo ones alone take about 30 min) and summarise them with benchstat
	mkdir -p _output
	$(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) -timeout 60m $$($(GO) list ./pkg/... ./test/bench/... | grep -v /test/bench/gitrepo) | tee _output/bench.txt
	$(GO) run $(BENCHSTAT) _output/bench.txt
	$(MAKE) --no-print-directory bench-gitrepo

# One gitRepo sample is one batch of volumes (-benchtime 1x). The batches that
# write the whole tree for 20 volumes take minutes each and get fewer samples.
# The load average before and after goes into the output.
GITREPO_BENCH = $(GO) test -run '^$$' -benchtime 1x -timeout 60m ./test/bench/gitrepo/

.PHONY: bench-gitrepo
bench-gitrepo: ## Run the gitRepo benchmark (as root, about 30 min) into _output/bench-gitrepo.txt and summarise it
	mkdir -p _output
	uptime | sed 's/^/# /' | tee _output/bench-gitrepo.txt
	$(GITREPO_BENCH) -count $(BENCH_COUNT) -bench 'GitRepo/.*/.*/volumes=1$$' | tee -a _output/bench-gitrepo.txt
	$(GITREPO_BENCH) -count $(BENCH_COUNT) -bench 'GitRepo/.*/overlay/volumes=20$$' | tee -a _output/bench-gitrepo.txt
	$(GITREPO_BENCH) -count 3 -bench 'GitRepo/size=50MB/(kubelet|copy|cp-a)/volumes=20$$' | tee -a _output/bench-gitrepo.txt
	$(GITREPO_BENCH) -count 1 -bench 'GitRepo/size=500MB/(kubelet|copy|cp-a)/volumes=20$$' | tee -a _output/bench-gitrepo.txt
	uptime | sed 's/^/# /' | tee -a _output/bench-gitrepo.txt
	$(GO) run $(BENCHSTAT) _output/bench-gitrepo.txt

.PHONY: run
run: build ## Set the bundled examples/ up under .run/ (no network needed)
	RUN_DIR=$(RUN_DIR) BINARY=$(BINARY) ./hack/run-examples.sh

.PHONY: clean
clean: ## Remove build output (not .run/, which may hold mounts: use `make run` to tear it down)
	rm -rf $(BIN_DIR) _output
