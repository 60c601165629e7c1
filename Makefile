# medmesh — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/medmesh
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Tests run one package at a time per core; privileged tests share the host.
TESTFLAGS ?= -count=1 -timeout 20m

.PHONY: help build generate check-generate lint test test-unit bench \
        bench-coordinator bench-datapath bench-capture bench-enforcer bench-mesh bench-score \
        demo demo-down e2e chaos clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

build: ## Build bin/medmesh
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/medmesh

generate: ## Regenerate protobuf and BPF code with the pinned tools
	$(GO) tool buf generate
	$(GO) generate ./...

check-generate: ## Fail if regenerating changes any committed file
	@$(MAKE) --no-print-directory generate >/dev/null
	@if [ -n "$$(git status --porcelain -- proto node enforcer coordinator internal)" ]; then \
		echo "check-generate: regenerated code differs from the committed code:"; \
		git status --porcelain -- proto node enforcer coordinator internal; exit 1; fi
	@echo "check-generate: generated code is up to date"

lint: ## buf lint, buf breaking against main, go vet
	$(GO) tool buf lint
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
		$(GO) tool buf breaking --against '.git#branch=main'; \
	else echo "lint: no main branch with buf.yaml yet; buf breaking skipped"; fi
	$(GO) vet ./...

test: lint check-generate test-unit ## Lint, generated-code drift, and every test tier the machine allows

test-unit: ## go test ./... (privileged tests run when root, skip with a reason otherwise)
	$(GO) test $(TESTFLAGS) ./...

bench: bench-datapath bench-score bench-enforcer bench-mesh bench-coordinator ## Every benchmark

bench-coordinator: ## medmesh vs etcd write throughput and p99 (3 nodes each, loopback)
	@echo "bench-coordinator: not built yet"; exit 1

bench-datapath: ## XDP sensor program vs bare XDP_PASS (prog.Benchmark)
	@echo "bench-datapath: not built yet"; exit 1

bench-capture: ## medmesh vs softflowd, pmacctd, ndpiReader on a veth pair
	@echo "bench-capture: not built yet"; exit 1

bench-score: ## Flow scoring and detector cost
	@echo "bench-score: not built yet"; exit 1

bench-enforcer: ## Enforcer program vs XDP_PASS; decision propagation vs etcd watch
	@echo "bench-enforcer: not built yet"; exit 1

bench-mesh: ## Gossip convergence, failure detection, reporting throughput
	@echo "bench-mesh: not built yet"; exit 1

demo: build ## Start a --dev coordinator and walk through the CLI (the campus lab later)
	@echo "demo: not built yet"; exit 1

demo-down: ## Remove everything demo started
	@echo "demo-down: nothing to remove"

e2e: ## Chaos harness, bounded set
	@echo "e2e: not built yet"; exit 1

clean: ## Remove build output
	rm -rf bin
