// simt: runs CUDA kernels on the CPU, so that CI (which has no GPU) executes the fused sampling
// kernel's code, not only compiles it.
//
// What it models: the launches on a stream one after another, each grid cluster by cluster (a
// block without clusters is a cluster of one), in grid order or, under the shuffled and run-ahead
// schedules, in a random order; every thread of a cluster is a fiber on one OS thread (switched by
// a few lines of x86-64 assembly, or ucontext elsewhere), run until it reaches a barrier or a warp
// collective; __syncthreads, __syncwarp, the warp shuffles and votes, and cluster.sync() wait for
// exactly the threads CUDA waits for. Each CTA's static and dynamic shared memory is its own
// allocation, filled with 0xFF bytes (NaN as floats, -1 as integers) at launch and bounded by
// inaccessible pages, and cluster.map_shared_rank() maps an address to the same offset in another
// CTA's allocation. Launches check what the CUDA runtime checks for this kernel (dynamic shared
// memory against the function's attribute and the device's opt-in limit, cluster sizes, grid
// limits).
//
// What it catches: barriers that not every thread reaches (deadlock, reported with what each
// thread waits for), lanes of one warp at different collectives, a thread leaving while others
// wait for it, a read of another CTA's shared memory after that CTA exited, misaligned 16-byte
// loads, out-of-bounds shared or global accesses (a fault on a guard page), uninitialised shared
// memory (poisoned), and order dependence between barriers (with shuffled and run-ahead thread
// orders). A fault (guard page, misaligned SSE store) names the thread and CTA that took it. A
// lane that exits while its warp waits at __syncwarp is reported, stricter than CUDA.
//
// What it does not model: concurrency inside a barrier interval (each thread runs alone between
// two synchronisation points, so intra-warp lockstep assumptions without a collective and memory
// ordering are not checked: compute-sanitizer's racecheck on a GPU covers those), timing, and
// device float rounding beyond IEEE-754 (the host compiles with -ffp-contract=off; __fmaf_rn is
// std::fma).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>

namespace simt {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

// The emulated device. The defaults are an H100 SXM: 227 KB of opt-in shared memory per block and
// non-portable clusters of up to 16 CTAs.
struct DeviceModel {
  int optin_shared_bytes = 232448;
  int max_cluster = 16;
  int multiprocessors = 132;
  int compute_capability_major = 9;
};
DeviceModel& device();

// The order in which threads run between synchronisation points. kForward: sweeps over threads
// 0, 1, ... of rank 0, then of rank 1, ..., each running until it blocks; kShuffled: the same with
// a new random order every sweep (so threads move in near lockstep); kRunAhead: always the first
// runnable thread of one random order, so a CTA or warp gets as far ahead of the others as the
// barriers allow (a CTA rewriting shared memory that another CTA has yet to read shows here).
enum class Schedule { kForward, kShuffled, kRunAhead };
void set_schedule(Schedule schedule, uint64_t seed = 1);

// Where shared memory sits in its guarded mapping: flush against the inaccessible page above it
// (an overrun faults) or below it (an underrun faults). The rest of the mapping is poisoned too.
enum class SharedPlacement { kFlushHigh, kFlushLow };
void set_shared_placement(SharedPlacement placement);

// Aborts the process with a message (the test binary fails, ctest reports it).

[[noreturn]] void fail(const std::string& message);

struct ThreadState {
  Dim3 thread_idx;
  Dim3 block_idx;
};
ThreadState& current_thread();

// Per-CTA shared memory of the running thread's CTA.
void* static_shared(size_t bytes, size_t align);
void* dynamic_shared();
int cluster_rank();
int cluster_size();
void* map_shared_rank(const void* address, int rank);

// Synchronisation points. A Site names the intrinsic and its call site: threads of one group that
// meet at different sites are diverging, which CUDA leaves undefined and simt reports.
struct Site {
  const char* name;
  const char* file;
  int line;
};
void syncthreads(const Site& site);
void syncwarp(unsigned mask, const Site& site);
void cluster_sync(const Site& site);
// A warp collective: every lane deposits 8 bytes and gets back the deposit of `source_lane` (-1:
// its own); `all`, when not null, receives every lane's deposit.
uint64_t warp_exchange(unsigned mask, uint64_t mine, int source_lane, uint64_t* all,
                       const Site& site);

// Launch: runs `body` once per thread of the grid, cluster by cluster. Returns 0 on success or the
// cudaError_t a real launch would return for the configuration.
struct LaunchShape {
  Dim3 grid, block, cluster;
  size_t dynamic_shared_bytes = 0;
  size_t max_dynamic_shared_bytes = 0;  // the function's attribute
  bool non_portable_cluster_allowed = false;
};
int launch(const LaunchShape& shape, const std::function<void()>& body);

// Synchronisation instances completed by the last launch (each counted once, not per thread).
struct LaunchStats {
  int64_t clusters = 0;
  int64_t cluster_syncs = 0;
  int64_t block_syncs = 0;       // __syncthreads, all CTAs
  int64_t warp_collectives = 0;  // shuffles, votes and __syncwarp, all warps
};
const LaunchStats& last_launch_stats();
// Launches that ran so far (a kernel chain on a stream is several; the emulated stream runs each
// launch to completion before the next, as a real stream orders them).
int64_t launch_count();

// An anonymous mapping with an inaccessible page on each side of its usable bytes, [begin(),
// end()): shared memory, fiber stacks and GuardedBuffer are placed in these.
class GuardedMapping {
 public:
  GuardedMapping() = default;
  ~GuardedMapping() { release(); }
  GuardedMapping(const GuardedMapping&) = delete;
  GuardedMapping& operator=(const GuardedMapping&) = delete;
  GuardedMapping(GuardedMapping&& other) noexcept { *this = std::move(other); }
  GuardedMapping& operator=(GuardedMapping&& other) noexcept;
  void allocate(size_t bytes);  // at least `bytes` usable, rounded up to whole pages
  char* begin() const { return begin_; }
  char* end() const { return end_; }
  void poison() const;   // every usable byte 0xFF: NaN as floats, -1 as integers
  void protect() const;  // every usable byte inaccessible
  void release();

 private:
  char* mapping_ = nullptr;
  size_t mapping_bytes_ = 0;
  char* begin_ = nullptr;
  char* end_ = nullptr;
};

// Memory flush against an inaccessible page (and with one before it), so that a read past either
// end of a buffer faults: the emulator's memcheck for global memory.
class GuardedBuffer {
 public:
  explicit GuardedBuffer(size_t bytes) : bytes_(bytes) {
    mapping_.allocate(bytes);
    data_ = mapping_.end() - bytes;
  }
  void* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  GuardedMapping mapping_;
  char* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace simt
