# Two commands do everything: `make run` and `make test`.
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CONFIG ?= examples/single-node.yaml

.PHONY: all setup configure build run test asan bench clean format

all: build

setup:
	@scripts/setup

$(BUILD_DIR)/CMakeCache.txt:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE)

configure: setup $(BUILD_DIR)/CMakeCache.txt

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	$(BUILD_DIR)/nodes/troupe node --config $(CONFIG)

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

# Every benchmark under tests/bench/, each against its baseline in the same
# run; the table also goes to docs/benchmarks.md.
bench: build
	cmake --build $(BUILD_DIR) -j $(JOBS) --target troupe_cluster_bench troupe_agent_density_bench troupe_local_path_bench
	scripts/bench $(BUILD_DIR)

# AddressSanitizer + UBSan build in its own tree.
asan:
	@scripts/setup
	cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DTROUPE_SANITIZE=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j $(JOBS)

format:
	find runtime actors cluster nodes examples tests -name '*.hpp' -o -name '*.cpp' | xargs clang-format -i

clean:
	rm -rf $(BUILD_DIR) build-asan
