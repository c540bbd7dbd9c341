# imlite build, code generation and tests. `make help` lists the targets.

SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/bin
TOOLS := $(CURDIR)/.tools
BUF   := $(TOOLS)/node_modules/.bin/buf

# Pinned code generators; gen/ must be rebuilt with exactly these.
BUF_VERSION              := 1.75.0
PROTOC_GEN_GO            := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC       := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
PROTOC_GEN_GRPC_GATEWAY  := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@v2.34.0
PROTOC_GEN_OPENAPIV2     := github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@v2.34.0
PROTOC_GEN_CONNECT_GO    := connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1

.PHONY: help run build tools generate check-generate lint test test-go fuzz bench clean

help:
	@echo "make run             run the server in embedded mode (no external services)"
	@echo "make test            install test backends, then run every check and test"
	@echo "make build           build bin/imlite (static, CGO_ENABLED=0)"
	@echo "make generate        rebuild gen/ from proto/"
	@echo "make bench           short benchmark run"

run:
	$(GO) run ./cmd/imlite $(ARGS)

build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/imlite ./cmd/imlite

tools: $(BUF) $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-grpc-gateway $(BIN)/protoc-gen-openapiv2 $(BIN)/protoc-gen-connect-go

$(BUF):
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GO)
$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GO_GRPC)
$(BIN)/protoc-gen-grpc-gateway:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_GRPC_GATEWAY)
$(BIN)/protoc-gen-openapiv2:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_OPENAPIV2)
$(BIN)/protoc-gen-connect-go:
	GOBIN=$(BIN) $(GO) install $(PROTOC_GEN_CONNECT_GO)

# generate rebuilds gen/ from scratch, so a deleted proto leaves nothing behind.
generate: tools
	$(BUF) lint
	rm -rf gen
	$(BUF) generate
	./scripts/gen-openapi-embed.sh gen/openapi

# check-generate fails when gen/ differs from what the protos produce.
check-generate: generate
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
		echo "gen/ is stale: run 'make generate' and commit the result"; \
		git status --porcelain -- gen; exit 1; \
	fi

lint:
	@unformatted=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# test is the whole suite, as CI runs it on a fresh machine.
test:
	./scripts/test.sh

# test-go runs only the Go tests, for a machine that is already set up.
test-go:
	$(GO) test -race -count=1 ./...

fuzz:
	./scripts/fuzz.sh 15s

bench:
	$(GO) test -run '^$$' -bench . -benchtime 200x -benchmem ./...

clean:
	rm -rf $(BIN) $(TOOLS)
