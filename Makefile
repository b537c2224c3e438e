# sluice: build, test, fuzz, bench. `sudo make test` is the whole suite.

# go: GO if given (a name on PATH or a path), else the go on PATH, else one
# from where Go is usually installed: sudo's secure_path (Debian, Ubuntu)
# drops the invoking user's PATH, so `sudo make test` would not find it. The
# first that is at least go.mod's version wins (else the first found, left
# to say itself what is wrong). Its directory goes first on every recipe's
# PATH: the tests run `go` too (testing/e2e builds the binary).
SUDO_HOME := $(if $(SUDO_USER),$(shell getent passwd '$(SUDO_USER)' | cut -d: -f6))
GO_PLACES := /usr/local/go/bin/go /usr/lib/go/bin/go \
	$(shell ls -d /usr/lib/go-1.*/bin/go 2>/dev/null | sort -rV) /snap/bin/go \
	$(shell ls -d $(SUDO_HOME)/sdk/go*/bin/go $(HOME)/sdk/go*/bin/go 2>/dev/null | sort -rV) \
	$(if $(SUDO_HOME),$(SUDO_HOME)/go/bin/go $(SUDO_HOME)/.local/go/bin/go)
GO_WANT := $(shell awk '$$1 == "go" { print $$2; exit }' go.mod)
ifeq ($(origin GO),undefined)
GO_TRY := $(shell command -v go 2>/dev/null) $(GO_PLACES)
else
GO_TRY := $(shell command -v '$(GO)' 2>/dev/null)
endif
GO_BIN := $(shell first=; for g in $(GO_TRY); do \
	[ -x "$$g" ] || continue; [ -n "$$first" ] || first=$$g; \
	have=$$(GOTOOLCHAIN=local "$$g" env GOVERSION 2>/dev/null | sed 's/^go//'); \
	if [ -n "$$have" ] && [ "$$(printf '%s\n%s\n' '$(GO_WANT)' "$$have" | sort -V | head -n1)" = '$(GO_WANT)' ]; then echo "$$g"; exit; fi; \
	done; echo "$$first")
ifneq ($(GO_BIN),)
GO := $(GO_BIN)
export PATH := $(patsubst %/,%,$(dir $(GO_BIN))):$(PATH)
endif

# Tools the tests run as real clients and verifiers, by Debian package.
TEST_PACKAGES := nftables curl dnsutils netcat-openbsd iputils-ping openssl procps chromium git systemd sudo podman dnsmasq-base busybox

.PHONY: build test deps fuzz bench lint go-found

build: go-found
	$(GO) build -o sluice ./cmd/sluice

# The whole suite: every test (root: namespaces, nftables, real clients),
# with the race detector, then each fuzz target briefly.
test: go-found deps
	$(GO) test -race -count=1 ./...
	$(MAKE) --no-print-directory fuzz

# Says what to do when no go was found, before anything else runs.
go-found:
	@if [ -z "$(GO_BIN)" ]; then \
		echo 'make: no go found (go.mod wants $(GO_WANT) or later): $(if $(filter undefined,$(origin GO)),none on PATH nor in $(strip $(GO_PLACES)),GO=$(GO) is not a command).' >&2; \
		echo '  sudo resets PATH (secure_path); name your go: sudo make $(or $(MAKECMDGOALS),build) GO=$$(command -v go)' >&2; \
		echo '  or keep your PATH: sudo env "PATH=$$PATH" make $(or $(MAKECMDGOALS),build). Installing Go: https://go.dev/doc/install' >&2; \
		exit 1; \
	fi

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
fuzz: go-found
	$(GO) test ./dnsfilter -run '^$$' -fuzz '^FuzzQuery$$' -fuzztime $$((80000 * $(FUZZ_SCALE)))x
	$(GO) test ./dnsfilter -run '^$$' -fuzz '^FuzzUpstreamAnswer$$' -fuzztime $$((100000 * $(FUZZ_SCALE)))x
	$(GO) test ./firewall -run '^$$' -fuzz '^FuzzParsePacket$$' -fuzztime $$((300000 * $(FUZZ_SCALE)))x
	$(GO) test ./firewall -run '^$$' -fuzz '^FuzzDeleteBody$$' -fuzztime $$((200000 * $(FUZZ_SCALE)))x
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzCanonicalName$$' -fuzztime $$((300000 * $(FUZZ_SCALE)))x
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzParseFile$$' -fuzztime $$((80000 * $(FUZZ_SCALE)))x
	$(GO) test ./policy -run '^$$' -fuzz '^FuzzSuggest$$' -fuzztime $$((20000 * $(FUZZ_SCALE)))x
	$(GO) test ./policy/importer -run '^$$' -fuzz '^FuzzImport$$' -fuzztime $$((50000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect -run '^$$' -fuzz '^FuzzCheckHello$$' -fuzztime $$((200000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect -run '^$$' -fuzz '^FuzzHelloDifferential$$' -fuzztime $$((60000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect -run '^$$' -fuzz '^FuzzRequestHead$$' -fuzztime $$((150000 * $(FUZZ_SCALE)))x
	$(GO) test ./webui -run '^$$' -fuzz '^FuzzFilterFrom$$' -fuzztime $$((200000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect/gitsmart -run '^$$' -fuzz '^FuzzClassify$$' -fuzztime $$((300000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect/gitsmart -run '^$$' -fuzz '^FuzzReadPush$$' -fuzztime $$((300000 * $(FUZZ_SCALE)))x
	$(GO) test ./tlsinspect/gitsmart -run '^$$' -fuzz '^FuzzReadPackCommits$$' -fuzztime $$((100000 * $(FUZZ_SCALE)))x

bench: go-found
	$(GO) test -run '^$$' -bench . -benchmem ./dnsfilter ./firewall

lint: go-found
	gofmt -l . | tee /dev/stderr | (! read)
	$(GO) vet ./...
	staticcheck ./...
