# herd: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/herd
# Seeds for the simulation sweep in `make test`: fixed, so CI is reproducible.
# `make sim` and `make sim-long` start from a random seed instead.
TEST_SEED ?= 1

.PHONY: all build test deps lint vet fmt-check unit race sim-sweep sim sim-long run bench bench-keeper bench-keeper-memory fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/herd

# deps installs what the tests need on a Debian machine (or says exactly what
# is missing). Today that is Go only; compatibility tests will add Debian
# packages here.
deps:
	@./.ci/deps

test: deps lint build unit race sim-sweep
	@echo "make test: all passed"

lint: fmt-check vet
	$(GO) test -count=1 -run 'SansIO' ./node/

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

unit:
	$(GO) test -count=1 ./...

# The production shell and the real disk adapter are the only concurrent code.
race:
	$(GO) test -count=1 -race ./node/shell/ ./disk/
	HERD_SHELL_NO_COMBINING=1 $(GO) test -count=1 -race ./node/shell/

sim-sweep: build
	$(BIN) sim --scenario demo --seed $(TEST_SEED) --seeds 500
	$(BIN) sim --scenario demo-busy --seed $(TEST_SEED) --seeds 40
	$(BIN) sim --scenario consensus --seed $(TEST_SEED) --seeds 500
	$(BIN) sim --scenario keeper --seed $(TEST_SEED) --seeds 500
	$(BIN) sim --scenario broker --seed $(TEST_SEED) --seeds 500
	# Every fault at a fixed middling rate: found a bug the swarm sweeps had not.
	$(BIN) sim --scenario consensus --seed $(TEST_SEED) --seeds 200 --swarm=false
	$(BIN) sim --scenario keeper --seed $(TEST_SEED) --seeds 200 --swarm=false

# sim: a fresh random sweep of every scenario (what a developer runs while
# changing distributed logic).
sim: build
	@for s in $$($(BIN) sim --list | awk '/^[a-z]/ {print $$1}'); do \
		$(BIN) sim --scenario $$s --seeds 500 || exit $$?; done

# sim-long: the soak: many more random seeds per scenario.
SIM_LONG_SEEDS ?= 20000
sim-long: build
	@for s in $$($(BIN) sim --list | awk '/^[a-z]/ {print $$1}'); do \
		$(BIN) sim --scenario $$s --seeds $(SIM_LONG_SEEDS) || exit $$?; done

run: build
	$(BIN) dev

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./sim/...

# The keeper next to Apache ZooKeeper 3.8 (Debian's package) on this machine:
# 3 servers each, loopback, fsync on, the same client, alternating rounds.
# SIDEBYSIDE_ARGS passes more flags, e.g. "--outstanding 16 --keys 96000" for
# trees of the same size in both (DESIGN section 11).
SIDEBYSIDE_ARGS ?=
bench-keeper: build
	$(GO) run ./compat/sidebyside --herd $(BIN) $(SIDEBYSIDE_ARGS)

# Resident memory with 1,000,000 znodes of 100 bytes, and restart time.
bench-keeper-memory: build
	$(GO) run ./compat/sidebyside --herd $(BIN) --memory

# Every fuzz target in turn, FUZZTIME each: frames, jute records, raft
# messages, Kafka requests on a broker, request frames on a keeper, snapshot
# images a keeper restores.
FUZZTIME ?= 30s
FUZZ_TARGETS = FuzzReader:./node/frame/ FuzzDecodeRequest:./node/jute/ FuzzDecodeMulti:./node/jute/ \
	FuzzConnectRequest:./node/jute/ FuzzDecodeMessage:./node/raft/ FuzzRequest:./node/broker/ \
	FuzzKeeperRequest:./sim/ FuzzKeeperRequests:./sim/ FuzzRestoreTree:./node/keeper/
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) ./.ci/fuzz $(FUZZ_TARGETS)

clean:
	rm -rf bin
