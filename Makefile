# lazyr — see README.md.
GO      ?= go
BIN     ?= bin/lazyr
GOFLAGS ?=

.PHONY: all build deps test unit bench lint demo clean

all: build

# Static (no cgo): without the dynamic loader and libc, lazyr starts about 2 ms sooner, which is a good part
# of what `restore --lazy-pages -d` takes. Nothing in lazyr needs cgo.
build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS) -o $(BIN) ./cmd/lazyr

# Installs what the project needs on a fresh Debian machine (gcc for victim programs, iproute2, ...).
deps:
	./scripts/deps.sh

# Everything: unit tests, fuzz seeds, and the integration tests (root, real kernel features).
test: deps lint
	$(GO) test $(GOFLAGS) -count=1 -timeout 60m ./...

unit:
	$(GO) test $(GOFLAGS) -count=1 -short ./...

bench: deps build
	$(GO) test $(GOFLAGS) -tags bench -count=1 -timeout 60m -run 'TestBench' -v ./integration/ 2>&1 | grep -v '^=== RUN\|^--- PASS\|^PASS\|^ok ' 

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags bench ./integration/

# Builds lazyr and a demo program, checkpoints the program and restores it lazily.
demo: deps build
	./scripts/demo.sh

clean:
	rm -rf bin demo
