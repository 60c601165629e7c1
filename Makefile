# medmesh — run `make help` for the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin/medmesh
# The lab and the benchmarks' client: not part of a deployment (make install).
LAB_BIN := bin/medmesh-lab
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Tests run one package at a time per core; privileged tests share the host.
TESTFLAGS ?= -count=1 -timeout 20m

.PHONY: help deps build install generate check-generate lint test test-unit fuzz bench \
        bench-coordinator bench-datapath bench-capture bench-enforcer bench-mesh bench-score bench-risk \
        demo demo-down console-screenshots e2e chaos clean soak scenario-latency

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

# The Debian packages everything here needs, one list: deploy/deps.txt.
DEPS_FILE := deploy/deps.txt
DEPS := $(shell sed -e 's/\#.*//' $(DEPS_FILE))

deps: ## Install the Debian packages of deploy/deps.txt that are missing (root; idempotent)
	@missing=(); for p in $(DEPS); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$$p"); done; \
	if (( $${#missing[@]} == 0 )); then echo "deps: all $(words $(DEPS)) packages of $(DEPS_FILE) are installed"; exit 0; fi; \
	install="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $${missing[*]}"; \
	if ! command -v apt-get >/dev/null; then echo "deps: missing $${missing[*]}, and this is not a Debian system: install them with its package manager"; exit 1; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "deps: missing $${missing[*]}; install them as root:"; echo "  sudo sh -c '$$install'"; exit 1; fi; \
	echo "deps: installing $${missing[*]} (apt-get)"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$${missing[@]}" >/dev/null; \
	echo "deps: installed $${missing[*]}"

build: ## Build bin/medmesh and bin/medmesh-lab (the campus lab, simulators, bench write)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/medmesh
	$(GO) build -o $(LAB_BIN) ./cmd/medmesh-lab

PREFIX ?= /usr/local

install: build ## Copy bin/medmesh to $(PREFIX)/bin (default /usr/local/bin)
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/medmesh
	@echo "install: $(DESTDIR)$(PREFIX)/bin/medmesh"

# Debian packages: a static, PIE, stripped binary per architecture, packaged
# by deploy/package (nfpm as a library) with man pages and completions
# from the host binary's command tree. SOURCE_DATE_EPOCH (the commit's
# time) makes two builds of one commit equal.
PKG_ARCHES ?= amd64 arm64
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || date +%s)

package: build ## Debian packages dist/medmesh_<version>_{amd64,arm64}.deb (nfpm; units, man pages, completions, /etc/medmesh)
	@set -e; for a in $(PKG_ARCHES); do \
		echo "package: building medmesh for linux/$$a"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -buildmode=pie -ldflags "-s -w $(LDFLAGS)" -o bin/linux-$$a/medmesh ./cmd/medmesh; \
		SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./deploy/package -version $(VERSION) -arch $$a \
			-bin bin/linux-$$a/medmesh -docs-from $(BIN) -out dist; \
	done

# The container image: static (non-PIE: the image has no loader) binaries
# per architecture, written by deploy/image (go-containerregistry) as one
# multi-architecture OCI layout in a tar file. No Docker.
image: ## OCI image layout tar dist/medmesh-image_<version>.oci.tar (amd64, arm64), built without Docker
	@set -e; bins=; for a in $(PKG_ARCHES); do \
		echo "image: building static medmesh for linux/$$a"; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$a $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o bin/image-$$a/medmesh ./cmd/medmesh; \
		bins="$$bins -bin $$a=bin/image-$$a/medmesh"; \
	done; \
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./deploy/image -version $(VERSION) $$bins -out dist/medmesh-image_$(VERSION).oci.tar

generate: ## Regenerate protobuf and BPF code with the pinned tools
	$(GO) tool buf generate
	$(GO) generate ./...

GENERATED := '*.pb.go' '*_bpfel.go' '*_bpfel.o' 'node/internal/oui/table.go'

check-generate: ## Fail if regenerating changes any committed generated file
	@$(MAKE) --no-print-directory generate >/dev/null
	@changed="$$(git status --porcelain -- $(GENERATED))"; \
	if [ -n "$$changed" ]; then \
		echo "check-generate: regenerated code differs from the committed code:"; echo "$$changed"; exit 1; fi
	@echo "check-generate: generated code is up to date"

lint: ## buf lint, buf breaking against main, go vet
	$(GO) tool buf lint
	@if git rev-parse --verify -q main >/dev/null && git cat-file -e main:buf.yaml 2>/dev/null; then \
		$(GO) tool buf breaking --against '.git#branch=main'; \
	else echo "lint: no main branch with buf.yaml yet; buf breaking skipped"; fi
	$(GO) vet ./...

test: deps lint check-generate test-unit fuzz ## Lint, generated-code drift, every test tier the machine allows, fuzzing

# Fuzz targets on hostile input, as PACKAGE:TARGET; -fuzz takes one target per run.
FUZZ_TARGETS := ./node/replay:FuzzCaptureReader \
	./internal/names:FuzzDeviceKey \
	./internal/passwd:FuzzParse \
	./coordinator/internal/policy:FuzzImportMUD \
	./coordinator/internal/api:FuzzPolicyJSON \
	./coordinator/internal/api:FuzzValidateReport \
	./risk/internal/csaf:FuzzParse \
	./risk/internal/version:FuzzConstraint \
	./risk/internal/bundle:FuzzManifest \
	./risk:FuzzInventory \
	./compliance/internal/mds2:FuzzParse \
	./compliance:FuzzReadInventory \
	./risk:FuzzSourceFile \
	./risk/internal/sbom:FuzzParse \
	./risk/internal/osv:FuzzParseRecord \
	./risk/internal/osv:FuzzReadZip \
	./coordinator/internal/api:FuzzValidateResolvedPeers \
	./coordinator/internal/backup:FuzzExtract \
	./enforcer/internal/resolve:FuzzAnswer \
	./enforcer/internal/state:FuzzDecodeRecord \
	./cmd/medmesh:FuzzParseConfig \
	./coordinator/internal/api:FuzzIncidentToken \
	./coordinator/internal/api:FuzzReportToken \
	./integrations/assetfile:FuzzReadCSV \
	./integrations/assetfile:FuzzReadJSONL \
	./integrations/assetfile:FuzzReadFHIR \
	./node/internal/detect:FuzzNeighbor \
	./node/internal/detect:FuzzNTP \
	./node/internal/detect:FuzzSyslog \
	./node/internal/detect:FuzzLDAP \
	./node/internal/detect:FuzzSNMP \
	./node/internal/detect:FuzzDHCP \
	./node/internal/detect:FuzzHL7 \
	./node/internal/identity:FuzzProductStrings \
	./node/internal/creds:FuzzParse \
	./node/internal/detect:FuzzTelnet \
	./node/internal/detect:FuzzFTP \
	./node/internal/detect:FuzzHTTPForm \
	./node/internal/detect:FuzzMQTT \
	./node/internal/detect:FuzzVNC \
	./node/internal/detect:FuzzSSH \
	./node/internal/detect:FuzzARP \
	./coordinator/internal/posture:FuzzUDIDI \
	./coordinator/internal/api:FuzzRiskTokens \
	./node/collector:FuzzDecode \
	./internal/sinkcfg:FuzzParseConfig \
	./node/internal/detect:FuzzDICOM \
	./node/internal/detect:FuzzTLS \
	./node/internal/detect:FuzzHTTP \
	./node/internal/detect:FuzzSSDP \
	./node/internal/detect:FuzzModbus \
	./node/internal/detect:FuzzBACnet \
	./node/internal/detect:FuzzDHCPv6 \
	./node/internal/detect:FuzzDNS \
	./node/internal/detect:FuzzMDNS \
	./node/internal/xdp:FuzzDecodeEvent \
	./node/internal/xdp:FuzzProgram \
	./coordinator/internal/web:FuzzParseRoleMapping \
	./coordinator/internal/web:FuzzSSOCallback \
	./coordinator/internal/web:FuzzGroupsClaim


FUZZTIME ?= 5s

# A bare "context deadline exceeded" with no failing input written is Go
# 1.26's fuzz coordinator racing its own -fuzztime deadline
# (golang/go#75804): retried once, then reported and not counted. A real
# finding always writes its input under testdata/fuzz and fails.
fuzz: ## Run each fuzz target in FUZZ_TARGETS for FUZZTIME (5s): every parser of outside input
	@set -e; out=$$(mktemp); trap 'rm -f "$$out"' EXIT; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz: $$name ($$pkg, $(FUZZTIME))"; \
		for try in 1 2; do \
			if $(GO) test -count=1 -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -parallel 1 $$pkg >$$out 2>&1; then cat $$out; break; fi; \
			cat $$out; \
			if grep -q 'context deadline exceeded' $$out && ! grep -q 'Failing input written' $$out; then \
				echo "fuzz: $$name: Go 1.26's fuzz coordinator raced its own -fuzztime deadline (golang/go#75804, fixed in Go 1.27); no failing input was written"; \
				if [ $$try = 1 ]; then echo "fuzz: $$name: once more"; continue; fi; break; fi; \
			exit 1; \
		done; \
	done

test-unit: ## go test ./... (privileged tests run when root, skip with a reason otherwise)
	$(GO) test $(TESTFLAGS) ./...

soak: build ## A simulated year of 2,000 devices through the FSM: heap and snapshot flat after retention; audit verify
	@set -e; dir=$$(mktemp -d /tmp/medmesh-soak.XXXXXX); trap 'rm -rf "$$dir"' EXIT; \
	MEDMESH_SOAK=1 MEDMESH_SOAK_DIR=$$dir $(GO) test -count=1 -run '^TestSoakYear$$' -v -timeout 15m ./coordinator/internal/fsm/; \
	$(BIN) audit verify --data-dir $$dir

bench: bench-datapath bench-score bench-enforcer bench-mesh bench-coordinator bench-risk ## Every benchmark

bench-coordinator: ## medmesh vs etcd write throughput and p99 (3 nodes each, loopback)
	@command -v etcd >/dev/null || { echo "bench-coordinator: installing etcd-server"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null; }
	@$(MAKE) --no-print-directory build
	$(GO) run ./e2e/benchcoord -bin $(BIN) -lab-bin $(LAB_BIN) $(BENCHCOORD_FLAGS)

bench-datapath: ## XDP sensor program vs bare XDP_PASS (prog.Benchmark)
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkDatapath$$' -benchtime 1x ./node/internal/xdp/

bench-capture: ## medmesh vs softflowd, pmacctd, ndpiReader on a veth pair
	MEDMESH_BENCH_CAPTURE=1 $(GO) test -count=1 -timeout 10m -run '^TestCaptureBench$$' -v ./node/datapath/

# osv-scanner, the peer of bench-risk, needs Go 1.27 to build: the go command
# fetches that approved toolchain from the module proxy for this install only.
OSV_SCANNER_VERSION := v2.6.0
bench-risk: ## risk assess of 10,000 devices (200 models, 500-component SBOMs) and SBOM matching, each against osv-scanner offline on the same files
	@command -v osv-scanner >/dev/null || test -x bin/osv-scanner || { echo "bench-risk: installing osv-scanner $(OSV_SCANNER_VERSION) into bin/"; \
		GOTOOLCHAIN=go1.27.3 GOBIN=$(CURDIR)/bin $(GO) install github.com/google/osv-scanner/v2/cmd/osv-scanner@$(OSV_SCANNER_VERSION); }
	@$(MAKE) --no-print-directory build
	MEDMESH_BIN=$(CURDIR)/$(BIN) PATH=$(CURDIR)/bin:$$PATH $(GO) test -count=1 -run '^$$' -bench '^BenchmarkRiskAssess$$' -benchtime 1x -timeout 30m -v ./risk/
	PATH=$(CURDIR)/bin:$$PATH $(GO) test -count=1 -run '^$$' -bench '^BenchmarkSBOMMatch$$' -benchtime 3x -timeout 20m ./risk/

bench-score: ## Flow scoring and detector cost
	$(GO) test -count=1 -run 'TestFastPathAllocs|TestInBaselineDoesNotAllocate' ./node/internal/engine ./node/internal/score
	$(GO) test -run '^$$' -bench . -benchtime 1s -cpu 1 -count 3 ./node/internal/score ./node/internal/engine
	$(GO) test -run '^$$' -bench . -benchtime 200ms -cpu 1 ./node/internal/detect

bench-enforcer: ## Enforcer program vs XDP_PASS; decision propagation vs etcd watch
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkProgram$$' -benchtime=5x -timeout 15m ./enforcer/internal/xdp/
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkApply$$' -benchtime=20000x ./enforcer/
	$(GO) test -count=1 -run '^$$' -bench '^BenchmarkPropagation$$' -benchtime=1x -timeout 15m ./enforcer/

bench-mesh: ## Gossip convergence, failure detection, reporting throughput
	@mkdir -p bin
	MEDMESH_BENCH=1 MEDMESH_BENCH_OUT=$(CURDIR)/bin/bench-mesh-gossip.md \
		$(GO) test -count=1 -timeout 10m -run '^TestBenchMesh$$' -v ./node/gossip/
	MEDMESH_BENCH=1 MEDMESH_BENCH_OUT=$(CURDIR)/bin/bench-mesh-report.md \
		$(GO) test -count=1 -timeout 15m -run '^TestBenchReporting$$' -v ./node/internal/reporter/
	@cat bin/bench-mesh-gossip.md bin/bench-mesh-report.md

# The device the compromised-device scenario takes over (deploy/lab
# DefaultConfig's Compromised, nursecall1).
DEMO_COMPROMISED_MAC := 00:14:b8:00:01:0d

demo: deps build ## As root: bring up the campus lab, run the compromised-device and compromised-pump scenarios live, then its web console in Chromium
	@if [ "$$(id -u)" != 0 ]; then echo "demo: the campus lab needs root (network namespaces, veth, XDP): run it as root, or sudo make demo"; exit 1; fi
	$(LAB_BIN) up
	$(LAB_BIN) run --scenario compromised-device --view
	@echo; echo "The SIEM and the ticketing system hear of it: outbound sinks (docs/integrations.md) send every alert."
	$(LAB_BIN) sinks
	@echo; echo "Now an infusion pump (life-critical) is compromised: its decisions wait for a second person."
	$(LAB_BIN) run --scenario compromised-pump --view
	@echo
	@echo "Risk posture: the devices to act on first (lab up imported a signed bundle of CISA advisories, KEV,"
	@echo "endoflife.date and the recall/GUDID fixtures; the lab's CMDB gave the devices their identities):"
	eval "$$($(LAB_BIN) env)" && $(BIN) risk top && $(BIN) intel status | tail -n 3
	@echo
	@echo "The compromised device ($(DEMO_COMPROMISED_MAC)) as a FHIR R4 Device, from medmesh devices export --format fhir"
	@echo "(a coordinator started with --fhir-addr serves the same at GET /fhir/Device?identifier=MAC):"
	eval "$$($(LAB_BIN) env)" && $(BIN) devices export --format fhir | \
		jq --arg mac $(DEMO_COMPROMISED_MAC) '.entry[].resource | select(any(.identifier[]?; .value == $$mac))'
	@echo "Compliance: the campus report from committed state, written to demo-report.html (self-contained;"
	@echo "rendered from demo-report.json, the report as the cluster served it):"
	eval "$$($(LAB_BIN) env)" && $(BIN) compliance report --format json --out demo-report.json && \
		$(BIN) compliance report --from demo-report.json --out demo-report.html && \
		jq -r '"  Raft index \(.raftIndex): \(.coverage.devices) devices; controls met \(.controlsMet), unmet \(.controlsUnmet), not evidenced \(.controlsNotEvidenced); \(.plan.actions | length) plan actions, first: \(.plan.actions[0].title // "none")"' demo-report.json
	MEDMESH_DEMO_REPORT=$(CURDIR)/demo-report.html $(GO) test -count=1 -run TestDemoReportInChromium ./compliance/report
	@echo
	@echo "The web console of this lab in headless Chromium (e2e TestConsoleLab): log in, the compromised device's alert live,"
	@echo "a policy enforced, a pending decision refused to its cause, a viewer and an operator and approved by a second"
	@echo "approver, the compliance report downloaded; screenshots of each page in bin/console-screenshots:"
	@rm -rf bin/console-screenshots
	MEDMESH_SCREENSHOTS=$(CURDIR)/bin/console-screenshots $(GO) test -tags e2e -count=1 -run '^TestConsoleLab$$' -v -timeout 10m ./e2e/
	@echo
	@echo "The campus lab is still running; the coordinator API is on this host at 127.0.0.1:7400, mutual TLS only."
	@$(LAB_BIN) status | sed -n 's/^web console: /  web console: /p'
	@echo "  eval \"\$$($(LAB_BIN) env)\"        # MEDMESH_ADDR and MEDMESH_TLS_* for the lab's approver certificate"
	@echo "  $(BIN) devices list          # the simulated devices and their classes"
	@echo "  $(BIN) alerts list; $(BIN) decisions list; $(BIN) cluster status"
	@echo "  $(BIN) risk device 98:e7:43:00:01:0e; $(BIN) risk findings --kind kev; $(BIN) intel status"
	@echo "  grpcurl -cacert \$$MEDMESH_TLS_CA -cert \$$MEDMESH_TLS_CERT -key \$$MEDMESH_TLS_KEY 127.0.0.1:7400 list"
	@echo "  $(BIN) compliance report --framework hipaa --out report.html; $(BIN) compliance exceptions list; $(BIN) compliance trend"
	@echo "  $(LAB_BIN) status            # namespaces, processes and their logs"
	@echo "  $(LAB_BIN) run --scenario compromised-device -o json   # jq .class_policy"
	@echo "  $(BIN) policies get class/it-workstation"
	@echo "Remove everything with: make demo-down"

console-screenshots: ## The web console in headless Chromium on a 3-node test cluster with 10,000 devices, and single sign-on through a real OpenID provider: screenshots in bin/console-screenshots, timings in bin/console-perf.txt (make demo: the lab's)
	MEDMESH_SCREENSHOTS=$(CURDIR)/bin/console-screenshots MEDMESH_CONSOLE_PERF=$(CURDIR)/bin/console-perf.txt \
		$(GO) test -count=1 -run '^(TestConsoleInBrowser|TestConsoleSingleSignOnInBrowser)$$' -v -timeout 12m ./coordinator/ 2>&1 | { grep -vE '^time=|level=' || true; }; exit $${PIPESTATUS[0]}
	@echo "console screenshots: bin/console-screenshots; timings: $$(cat bin/console-perf.txt)"

scenario-latency: build ## As root, under the lab lock: RUNS (default 20) compromised-device runs, each on a fresh lab; p50/p99 detection-to-drop and -to-enforce
	@if [ "$$(id -u)" != 0 ]; then echo "scenario-latency: the campus lab needs root"; exit 1; fi
	@n=$(or $(RUNS),20); dir=bin/scenario-latency; rm -rf $$dir; mkdir -p $$dir; \
	for i in $$(seq 1 $$n); do \
		$(LAB_BIN) down >/dev/null && $(LAB_BIN) up >/dev/null || exit 1; \
		$(LAB_BIN) run --scenario compromised-device --baseline-timeout 2m -o json > $$dir/run-$$i.json; \
		jq -r --arg r "run $$i/$$n:" '"\($$r) detection_to_drop_ms \(.detection_to_drop_ms) detection_to_enforce_ms \(.detection_to_enforce_ms)"' $$dir/run-$$i.json \
			|| echo "run $$i/$$n: no outcome"; \
	done; \
	$(LAB_BIN) down >/dev/null; \
	for f in detection_to_drop_ms detection_to_enforce_ms; do \
		cat $$dir/run-*.json | jq -r ".$$f // -1" | sort -n | awk -v n=$$n -v f=$$f 'function rank(p) { i = p * m; return (i == int(i)) ? int(i) : int(i) + 1 } \
			$$1 != -1 { v[++m] = $$1 } \
			END { if (m == 0) { print f ": no run measured it"; exit 1 } \
				printf "%s over %d runs (%d without): p50 %.0f ms, p99 %.0f ms, min %.0f, max %.0f\n", \
					f, m, n - m, v[rank(0.50)], v[rank(0.99)], v[1], v[m] }'; \
	done; echo "each run's outcome: $$dir/run-N.json"

demo-down: ## Remove everything demo started
	@if [ -x $(LAB_BIN) ]; then $(LAB_BIN) down; else $(GO) run ./cmd/medmesh-lab down; fi

e2e: ## Chaos harness, bounded set (root): every nemesis once, every checker, report in e2e/reports; the lab inventory
	@if [ "$$(id -u)" != 0 ]; then echo "e2e: skipped: the campus lab needs root"; exit 0; fi; \
	rm -f e2e/reports/latest.txt; MEDMESH_E2E_SEED=$(SEED) $(GO) test -tags e2e -count=1 -timeout 12m ./e2e/...; rc=$$?; \
	if [ -f e2e/reports/latest.txt ]; then echo; cat e2e/reports/latest.txt; fi; exit $$rc

chaos: ## Random faults for DURATION (default 5m) with SEED (root); report in e2e/reports
	@if [ "$$(id -u)" != 0 ]; then echo "chaos: skipped: the campus lab needs root"; exit 0; fi; \
	rm -f e2e/reports/latest.txt; MEDMESH_E2E_SEED=$(SEED) MEDMESH_CHAOS_DURATION=$(or $(DURATION),5m) \
		$(GO) test -tags e2e -count=1 -timeout 0 -run '^TestChaos$$' ./e2e/; rc=$$?; \
	if [ -f e2e/reports/latest.txt ]; then echo; cat e2e/reports/latest.txt; fi; exit $$rc

clean: ## Remove build output
	rm -rf bin dist
