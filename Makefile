# sluice: build, test, fuzz, bench. `sudo make test` is the whole suite.

GO       ?= go
FUZZTIME ?= 10s
# Tools the tests run as real clients and verifiers, by Debian package.
TEST_PACKAGES := nftables curl dnsutils netcat-openbsd iputils-ping

.PHONY: build test deps unit fuzz bench lint

build:
	$(GO) build -o sluice ./cmd/sluice

# The whole suite: every test (root: namespaces, nftables, real clients),
# with the race detector, then each fuzz target for $(FUZZTIME).
test: deps
	$(GO) test -race -count=1 ./...
	$(MAKE) --no-print-directory fuzz

# Installs the test tools that are missing (Debian/Ubuntu, as root).
deps:
	@missing=""; for p in $(TEST_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

fuzz:
	$(GO) test ./dnsfilter -run '^$$' -fuzz '^FuzzQuery$$' -fuzztime $(FUZZTIME)
	$(GO) test ./dnsfilter -run '^$$' -fuzz '^FuzzUpstreamAnswer$$' -fuzztime $(FUZZTIME)
	$(GO) test ./firewall -run '^$$' -fuzz '^FuzzParsePacket$$' -fuzztime $(FUZZTIME)
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzCanonicalName$$' -fuzztime $(FUZZTIME)
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzParseFile$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tlsinspect -run '^$$' -fuzz '^FuzzReadHello$$' -fuzztime $(FUZZTIME)
	$(GO) test ./tlsinspect -run '^$$' -fuzz '^FuzzRequestHead$$' -fuzztime $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./dnsfilter ./firewall

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...
	staticcheck ./...
