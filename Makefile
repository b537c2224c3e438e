# sluice: build, test, fuzz, bench. `sudo make test` is the whole suite.

GO       ?= go
# Tools the tests run as real clients and verifiers, by Debian package.
TEST_PACKAGES := nftables curl dnsutils netcat-openbsd iputils-ping openssl procps chromium git

.PHONY: build test deps unit fuzz bench lint

build:
	$(GO) build -o sluice ./cmd/sluice

# The whole suite: every test (root: namespaces, nftables, real clients),
# with the race detector, then each fuzz target briefly.
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

# Each target runs for a number of executions (about 5-10 s here), not a
# duration: Go 1.26's coordinator can fail a duration run at its deadline
# with "context deadline exceeded" and no failing input (golang/go#75804,
# fixed in Go 1.27). FUZZ_SCALE multiplies the counts.
FUZZ_SCALE ?= 1
fuzz:
	$(GO) test ./dnsfilter -run '^$$' -fuzz '^FuzzQuery$$' -fuzztime $$((80000 * $(FUZZ_SCALE)))x
	$(GO) test ./dnsfilter -run '^$$' -fuzz '^FuzzUpstreamAnswer$$' -fuzztime $$((100000 * $(FUZZ_SCALE)))x
	$(GO) test ./firewall -run '^$$' -fuzz '^FuzzParsePacket$$' -fuzztime $$((300000 * $(FUZZ_SCALE)))x
	$(GO) test ./firewall -run '^$$' -fuzz '^FuzzDeleteBody$$' -fuzztime $$((200000 * $(FUZZ_SCALE)))x
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzCanonicalName$$' -fuzztime $$((300000 * $(FUZZ_SCALE)))x
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzParseFile$$' -fuzztime $$((80000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect -run '^$$' -fuzz '^FuzzCheckHello$$' -fuzztime $$((200000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect -run '^$$' -fuzz '^FuzzRequestHead$$' -fuzztime $$((150000 * $(FUZZ_SCALE)))x
	$(GO) test ./webui -run '^$$' -fuzz '^FuzzFilterFrom$$' -fuzztime $$((200000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect/gitsmart -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime $$((300000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect/gitsmart -run '^$$' -fuzz '^FuzzReadPush$$' -fuzztime $$((300000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect/gitsmart -run '^$$' -fuzz '^FuzzReadPackCommits$$' -fuzztime $$((100000 * $(FUZZ_SCALE)))x

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./dnsfilter ./firewall

lint:
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...
	staticcheck ./...
