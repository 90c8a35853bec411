# pdrelay: DHCPv6 prefix-delegating relay. `make help` lists the targets.
GO       ?= go
BIN      := bin/pdrelay
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -X github.com/pdrelay/pdrelay/internal/version.version=$(VERSION) -X github.com/pdrelay/pdrelay/internal/version.commit=$(COMMIT)
PKGS     := ./...
FUZZTIME ?= 30s
# Extra fwdbench flags for make bench and bench-quick, e.g. NIC ports:
# FWDFLAGS='-phys up0=enp1s0f0:enp1s0f1,dl0=enp2s0f0:enp2s0f1'
FWDFLAGS ?=
# Debian packages the end-to-end tests and the demo run as real peers.
DEB_PKGS := kea-dhcp6-server isc-dhcp-client dhcpcd-base iproute2 isc-dhcp-relay tshark frr nftables tcpreplay netsniff-ng

.PHONY: build test unit e2e race fuzz bench bench-quick bench-control lint demo deps clean help

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

build: ## build bin/pdrelay
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/pdrelay

deps: ## install Go modules and (as root) the Debian packages the tests use
	$(GO) mod download
	@scripts/install-debs.sh $(DEB_PKGS)

test: deps build ## everything CI runs: vet, unit tests, fuzz seeds, end-to-end tests in namespaces
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 12m $(PKGS)
	# The FIB's concurrent readers and oracle, and the packet path, under
	# the race detector too.
	$(GO) test -race -count=1 -short ./fib/ ./dataplane/

race: deps ## unit tests under the race detector
	$(GO) test -race -count=1 -short $(PKGS)

fuzz: ## run every fuzz target for FUZZTIME each (default 30s)
	@scripts/fuzz-all.sh $(FUZZTIME)

bench: ## benchmarks: relay path, bindings at 1M, store, restart, recovery, FIB, forwarding, kernel mode (routes, nftables, pps), BGP to FRR, kernel guard, flood, the forwarding harness sweep to bench/results/fwd-DATE.md (README has the figures)
	$(GO) test -run '^$$' -bench 'RelayPair' -benchmem -cpu 1 ./control/relay/
	$(GO) test -run '^$$' -bench 'TableMemory1M' -benchtime 1x -cpu 1 ./control/binding/
	$(GO) test -run '^$$' -bench 'Load1M' -benchmem ./control/store/
	$(GO) test -run '^$$' -bench 'Restart1M' -benchtime 3x ./control/daemon/
	$(GO) test -run '^$$' -bench '^BenchmarkRecovery$$' -benchtime 1x -timeout 30m ./control/daemon/
	$(GO) test -run '^$$' -bench '^BenchmarkExchangeDuringRecovery$$' -benchtime 1x -timeout 30m ./control/daemon/
	$(GO) test -run '^$$' -bench 'BulkQuery' -benchtime 1x ./control/lqserver/
	$(GO) test -run '^$$' -bench 'Lookup|SourceAllowed|Publish|Memory|DRAM' -benchmem ./fib/
	$(GO) test -run '^$$' -bench 'Forward|Parse|FIBParts|Checksum' -benchmem ./dataplane/
	$(GO) test -run '^$$' -bench Sum ./internal/csum/
	$(GO) test -run '^$$' -bench 'Fill1M' -benchtime 1x ./dataplane/nftguard/  # as root: namespaces
	$(GO) test -run '^$$' -bench 'Batch' ./dataplane/nftguard/  # as root: namespaces
	$(GO) test -run '^$$' -bench 'KernelFill' -benchtime 1x ./dataplane/nftguard/  # as root: namespaces
	$(GO) test -run '^$$' -bench 'Program100k|Reconcile100k' -benchtime 1x ./dataplane/kroute/  # as root: namespaces
	$(GO) test -run '^$$' -bench 'Batch' ./dataplane/kroute/  # as root: namespaces
	$(GO) test -run '^$$' -bench VethForwarding -benchtime 1x ./bench/  # as root: namespaces
	$(GO) test -run '^$$' -bench KernelForwarding -benchtime 1x -count 3 ./bench/  # as root: namespaces, nft
	$(GO) test -run '^$$' -bench PacketSocketCost -benchtime 1x ./bench/  # as root: namespaces
	$(GO) test -run '^$$' -bench ReplayVsTcpreplay -benchtime 1x ./bench/  # as root: namespaces, tcpreplay
	$(GO) test -count=1 -v -run 'TestEndToEndFlood' ./cmd/pdrelay/ | grep flood_e2e  # as root: namespaces
	$(GO) test -run '^$$' -bench 'AnnounceToFRR' -benchtime 1x -timeout 20m ./control/bgp/  # as root: namespaces, frr
	$(GO) run ./bench/cmd/fwdbench -sweep $(FWDFLAGS) -out bench/results/fwd-$$(date +%F).md  # as root: namespaces, trafgen

bench-quick: deps ## as root: the forwarding harness at 64 B, N=100k, both directions (under 3 min); ends with the pdrelay/linux pps ratio
	$(GO) run ./bench/cmd/fwdbench $(FWDFLAGS)

# The relay on cpu 1, cpload on cpu 0, on a machine with two or more.
CPLOAD_PIN = $$(test $$(nproc) -ge 2 && echo -relay-cpus 1 -lab-cpus 0)

bench-control: build ## as root: control-plane load through pdrelay (kernel mode) and ISC dhcrelay (the baseline), each on a core of its own: 10k, 100k, 1M clients to bench/cpload's fast responder; 100k capped at 0.4 of a cpu (saturated), relaying and snooping alone (dataplane off) and in kernel mode; 10k and 100k to Kea
	for n in 10000 100000 1000000; do $(GO) run ./bench/cmd/cpload -pdrelay $(BIN) -clients $$n -server fast -window 32 -baseline $(CPLOAD_PIN) || exit 1; done
	for m in off kernel; do $(GO) run ./bench/cmd/cpload -pdrelay $(BIN) -clients 100000 -server fast -window 32 -baseline -relay-cpu-share 0.4 -dataplane $$m $(CPLOAD_PIN) || exit 1; done
	for n in 10000 100000; do $(GO) run ./bench/cmd/cpload -pdrelay $(BIN) -clients $$n -server kea -window 32 || exit 1; done

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet $(PKGS)

demo: deps build ## as root: lab namespaces with Kea and a PD client, pdrelay relaying, prints its bindings
	$(GO) run ./bench/cmd/demo -pdrelay $(BIN)

clean: ## remove built files
	rm -rf bin
