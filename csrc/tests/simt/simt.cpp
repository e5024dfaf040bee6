// simt: the fiber scheduler behind the emulated CUDA runtime (see simt.h).
#include "simt.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <csignal>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <random>
#include <set>
#include <vector>

// Switching between fibers. On x86-64 a few instructions save the callee-saved registers and the
// floating-point control words and swap stacks (glibc's swapcontext makes a signal-mask system
// call on every switch, which made the emulated test three times slower); elsewhere, ucontext.
#if defined(__x86_64__) && !defined(SIMT_USE_UCONTEXT)
#define SIMT_STACK_SWITCH 1
extern "C" void simt_switch_stack(void** save_stack_pointer, void* target_stack_pointer);
extern "C" void simt_fiber_trampoline();
extern "C" [[noreturn]] void simt_fiber_main();
asm(R"(
  .pushsection .text
  .globl simt_switch_stack
  .type simt_switch_stack, @function
simt_switch_stack:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size simt_switch_stack, .-simt_switch_stack

  .globl simt_fiber_trampoline
  .type simt_fiber_trampoline, @function
simt_fiber_trampoline:
  call simt_fiber_main
  ud2
  .size simt_fiber_trampoline, .-simt_fiber_trampoline
  .popsection
)");
#endif

namespace simt {
namespace {

constexpr int kWarpSize = 32;
constexpr size_t kStackBytes = 64 * 1024;

size_t page_bytes() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

enum class WaitKind { kNone, kWarpCollective, kSyncwarp, kBlock, kCluster };

const char* wait_name(WaitKind kind) {
  switch (kind) {
    case WaitKind::kNone: return "nothing";
    case WaitKind::kWarpCollective: return "a warp shuffle/vote";
    case WaitKind::kSyncwarp: return "__syncwarp";
    case WaitKind::kBlock: return "__syncthreads";
    case WaitKind::kCluster: return "cluster.sync";
  }
  return "?";
}

// A fiber's or the scheduler's saved execution state.
struct Context {
#if SIMT_STACK_SWITCH
  void* stack_pointer = nullptr;
#else
  ucontext_t state;
#endif
};

struct Fiber {
  Context context;
  ThreadState state;
  int rank = 0, warp = 0, lane = 0;
  bool finished = false;
  bool blocked = false;
  WaitKind waiting_for = WaitKind::kNone;
  Site site{"", "", 0};
};

struct Barrier {
  int expected = 0;
  int arrived = 0;
  WaitKind kind = WaitKind::kNone;
  Site site{"", "", 0};
  std::vector<int> waiters;
};

bool same_site(const Site& a, const Site& b) {
  return a.line == b.line && std::strcmp(a.name, b.name) == 0 && std::strcmp(a.file, b.file) == 0;
}

struct Warp {
  Barrier barrier;
  uint64_t slots[kWarpSize];
};

struct Cta {
  GuardedMapping static_memory;
  size_t static_bytes = 0;
  char* static_base = nullptr;
  GuardedMapping dynamic_memory;
  char* dynamic_base = nullptr;
  Barrier barrier;
  std::vector<Warp> warps;
  int running_threads = 0;
  bool exited = false;
};

struct Machine {
  DeviceModel device;
  Schedule schedule = Schedule::kForward;
  SharedPlacement placement = SharedPlacement::kFlushHigh;
  std::mt19937_64 order_rng{1};

  // The launch in progress.
  LaunchShape shape;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  std::vector<Cta> ctas;
  Barrier cluster_barrier;
  std::vector<int> released;  // fibers a barrier has just released (for the run-ahead schedule)
  LaunchStats stats;
  int64_t launches = 0;
  int current = -1;
  Context scheduler;
  GuardedMapping stacks;
  size_t stack_count = 0;
};

Machine& machine() {
  static Machine m;
  return m;
}

Fiber& current_fiber() {
  Machine& m = machine();
  if (m.current < 0) fail("simt: device code called outside a launch");
  return m.fibers[m.current];
}

void switch_context(Context& from, Context& to) {
#if SIMT_STACK_SWITCH
  simt_switch_stack(&from.stack_pointer, to.stack_pointer);
#else
  if (swapcontext(&from.state, &to.state) != 0) fail("simt: swapcontext failed");
#endif
}

void fiber_entry();

// Prepares `context` to run fiber_entry() on [stack, stack + bytes) when first switched to.
void start_context(Context& context, char* stack, size_t bytes, Context& scheduler) {
#if SIMT_STACK_SWITCH
  (void)scheduler;  // simt_fiber_main switches back itself
  // simt_switch_stack pops the control words, six registers and a return address: the
  // trampoline, entered with a 16-byte aligned stack as the ABI has it after a call's push.
  const uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + bytes) / 16 * 16;
  uint64_t* frame = reinterpret_cast<uint64_t*>(top) - 8;
  uint32_t control[2];
  asm volatile("stmxcsr %0" : "=m"(control[0]));
  asm volatile("fnstcw %0" : "=m"(control[1]));
  std::memcpy(&frame[0], control, 8);
  for (int k = 1; k <= 6; ++k) frame[k] = 0;  // r15, r14, r13, r12, rbx, rbp
  frame[7] = reinterpret_cast<uint64_t>(&simt_fiber_trampoline);
  context.stack_pointer = frame;
#else
  if (getcontext(&context.state) != 0) fail("simt: getcontext failed");
  context.state.uc_stack.ss_sp = stack;
  context.state.uc_stack.ss_size = bytes;
  context.state.uc_link = &scheduler.state;
  makecontext(&context.state, fiber_entry, 0);
#endif
}

void yield_to_scheduler() {
  Machine& m = machine();
  switch_context(m.fibers[m.current].context, m.scheduler);
}

// Arrive at `barrier`; returns once every expected thread has arrived.
void arrive(Barrier& barrier, WaitKind kind, const Site& site) {
  Machine& m = machine();
  Fiber& f = m.fibers[m.current];
  if (barrier.arrived > 0 && (barrier.kind != kind || !same_site(barrier.site, site))) {
    char message[512];
    std::snprintf(message, sizeof(message),
                  "simt: thread %u of CTA %d reached %s at %s:%d while others of its group wait at "
                  "%s at %s:%d: divergent synchronisation",
                  f.state.thread_idx.x, f.rank, site.name, site.file, site.line, barrier.site.name,
                  barrier.site.file, barrier.site.line);
    fail(message);
  }
  barrier.kind = kind;
  barrier.site = site;
  if (++barrier.arrived == barrier.expected) {
    switch (kind) {
      case WaitKind::kCluster: ++m.stats.cluster_syncs; break;
      case WaitKind::kBlock: ++m.stats.block_syncs; break;
      case WaitKind::kWarpCollective:
        ++m.stats.warp_collectives;
        break;  // counted twice, see below
      case WaitKind::kSyncwarp: m.stats.warp_collectives += 2; break;
      case WaitKind::kNone: break;
    }
    for (int waiter : barrier.waiters) {
      m.fibers[waiter].blocked = false;
      m.fibers[waiter].waiting_for = WaitKind::kNone;
      if (m.schedule == Schedule::kRunAhead) m.released.push_back(waiter);
    }
    barrier.waiters.clear();
    barrier.arrived = 0;
    return;
  }
  barrier.waiters.push_back(m.current);
  f.blocked = true;
  f.waiting_for = kind;
  f.site = site;
  yield_to_scheduler();
}

void fiber_entry() {
  Machine& m = machine();
  (*m.body)();
  m.fibers[m.current].finished = true;
#if SIMT_STACK_SWITCH
  switch_context(m.fibers[m.current].context, m.scheduler);  // never resumed
  fail("simt: a finished fiber was resumed");
#endif
  // (ucontext: returning resumes the scheduler through uc_link.)
}

[[noreturn]] void report_deadlock() {
  Machine& m = machine();
  std::string message = "simt: deadlock: no thread can run.";
  int shown = 0;
  for (const Fiber& f : m.fibers) {
    if (f.finished || shown >= 8) continue;
    char line[400];
    std::snprintf(line, sizeof(line), "\n  CTA %d thread %u waits at %s (%s at %s:%d)", f.rank,
                  f.state.thread_idx.x, wait_name(f.waiting_for), f.site.name, f.site.file,
                  f.site.line);
    message += line;
    ++shown;
  }
  int finished = 0;
  for (const Fiber& f : m.fibers) finished += f.finished ? 1 : 0;
  message += "\n  (" + std::to_string(finished) + " of " + std::to_string(m.fibers.size()) +
             " threads have exited)";
  fail(message);
}

void run_cluster(const Dim3& first_block) {
  Machine& m = machine();
  const LaunchShape& s = m.shape;
  const int ranks = static_cast<int>(s.cluster.x * s.cluster.y * s.cluster.z);
  const int threads = static_cast<int>(s.block.x * s.block.y * s.block.z);
  const int warps = (threads + kWarpSize - 1) / kWarpSize;
  const int total = ranks * threads;

  m.ctas.clear();
  m.ctas.resize(ranks);
  for (int r = 0; r < ranks; ++r) {
    Cta& cta = m.ctas[r];
    cta.dynamic_memory.allocate(s.dynamic_shared_bytes);
    cta.dynamic_memory.poison();
    // CUDA aligns dynamic shared memory to 16 bytes (at least): flush high, the slack below the
    // guard page is under 16 bytes.
    cta.dynamic_base =
        m.placement == SharedPlacement::kFlushLow
            ? cta.dynamic_memory.begin()
            : reinterpret_cast<char*>(
                  reinterpret_cast<uintptr_t>(cta.dynamic_memory.end() - s.dynamic_shared_bytes) /
                  16 * 16);
    cta.barrier.expected = threads;
    cta.warps.assign(warps, Warp());
    for (int w = 0; w < warps; ++w) {
      const int lanes = std::min(kWarpSize, threads - w * kWarpSize);
      cta.warps[w].barrier.expected = lanes;
    }
    cta.running_threads = threads;
  }
  m.cluster_barrier = Barrier();
  m.cluster_barrier.expected = total;

  // Each fiber's stack slot: an inaccessible page, then its stack (stacks grow down into it).
  const size_t slot = kStackBytes + page_bytes();
  if (m.stack_count < static_cast<size_t>(total)) {
    m.stacks.allocate(static_cast<size_t>(total) * slot);
    m.stack_count = total;
    for (int i = 0; i < total; ++i) mprotect(m.stacks.begin() + i * slot, page_bytes(), PROT_NONE);
  }

  m.fibers.assign(total, Fiber());
  for (int i = 0; i < total; ++i) {
    Fiber& f = m.fibers[i];
    f.rank = i / threads;
    const int t = i % threads;
    f.warp = t / kWarpSize;
    f.lane = t % kWarpSize;
    f.state.thread_idx = {static_cast<unsigned>(t % s.block.x),
                          static_cast<unsigned>(t / s.block.x % s.block.y),
                          static_cast<unsigned>(t / (s.block.x * s.block.y))};
    // Cluster ranks run along x first (CUDA's block_rank order).
    f.state.block_idx = {
        first_block.x + static_cast<unsigned>(f.rank) % s.cluster.x,
        first_block.y + static_cast<unsigned>(f.rank) / s.cluster.x % s.cluster.y,
        first_block.z + static_cast<unsigned>(f.rank) / (s.cluster.x * s.cluster.y)};
    start_context(f.context, m.stacks.begin() + i * slot + page_bytes(), kStackBytes, m.scheduler);
  }

  int remaining = total;
  // Runs fiber i until it blocks or exits.
  auto step = [&](int i) {
    Fiber& f = m.fibers[i];
    m.current = i;
    switch_context(m.scheduler, f.context);
    if (!f.finished) return;
    --remaining;
    Cta& cta = m.ctas[f.rank];
    // CUDA does not count exited threads at a later barrier: the kernel must not leave while
    // others of its group still wait for it.
    if (cta.barrier.arrived > 0 || m.cluster_barrier.arrived > 0 ||
        cta.warps[f.warp].barrier.arrived > 0) {
      char message[160];
      std::snprintf(message, sizeof(message),
                    "simt: thread %u of CTA %d exited while threads of its block, warp or cluster "
                    "wait at a barrier",
                    f.state.thread_idx.x, f.rank);
      fail(message);
    }
    if (--cta.running_threads == 0) {
      // Its shared memory is gone: a pointer another CTA mapped earlier now faults.
      cta.exited = true;
      cta.dynamic_memory.protect();
      cta.static_memory.protect();
    }
  };
  std::vector<int> order(total);
  std::iota(order.begin(), order.end(), 0);
  if (m.schedule == Schedule::kRunAhead) {
    // Always the runnable thread that comes first in one random order of the cluster's threads:
    // that thread's CTA (and warp) runs as far as it can before any other moves.
    std::shuffle(order.begin(), order.end(), m.order_rng);
    std::vector<int> priority(total);
    for (int k = 0; k < total; ++k) priority[order[k]] = k;
    std::set<int> runnable(order.begin(), order.end());  // by priority
    m.released.clear();
    while (remaining > 0) {
      if (runnable.empty()) report_deadlock();
      const int i = order[*runnable.begin()];
      runnable.erase(runnable.begin());
      step(i);
      for (int r : m.released) runnable.insert(priority[r]);
      m.released.clear();
    }
  } else {
    while (remaining > 0) {
      if (m.schedule == Schedule::kShuffled) std::shuffle(order.begin(), order.end(), m.order_rng);
      bool progressed = false;
      for (int i : order) {
        const Fiber& f = m.fibers[i];
        if (f.finished || f.blocked) continue;
        step(i);
        progressed = true;
      }
      if (!progressed) report_deadlock();
    }
  }
  m.released.clear();
  m.current = -1;
}

}  // namespace

DeviceModel& device() { return machine().device; }

void set_shared_placement(SharedPlacement placement) { machine().placement = placement; }

const LaunchStats& last_launch_stats() { return machine().stats; }

int64_t launch_count() { return machine().launches; }

void set_schedule(Schedule schedule, uint64_t seed) {
  machine().schedule = schedule;
  machine().order_rng.seed(seed);
}

void fail(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  std::fflush(stderr);
  std::abort();
}

ThreadState& current_thread() { return current_fiber().state; }

void* static_shared(size_t bytes, size_t align) {
  Fiber& f = current_fiber();
  Cta& cta = machine().ctas[f.rank];
  if (cta.static_base == nullptr) {
    cta.static_memory.allocate(bytes);
    cta.static_memory.poison();
    cta.static_base = machine().placement == SharedPlacement::kFlushLow
                          ? cta.static_memory.begin()
                          : cta.static_memory.end() - bytes;
    cta.static_bytes = bytes;
    if (reinterpret_cast<uintptr_t>(cta.static_base) % align != 0) {
      fail("simt: static shared memory of this size cannot be placed flush and aligned");
    }
    // CUDA checks the function's dynamic shared-memory attribute plus its static shared memory
    // against the opt-in limit (cudaFuncSetAttribute fails); simt learns the static size here.
    const size_t optin = static_cast<size_t>(machine().device.optin_shared_bytes);
    if (bytes + machine().shape.max_dynamic_shared_bytes > optin) {
      fail("simt: the kernel's static shared memory (" + std::to_string(bytes) +
           " B) plus its MaxDynamicSharedMemorySize attribute (" +
           std::to_string(machine().shape.max_dynamic_shared_bytes) +
           " B) exceeds the device's opt-in limit (" + std::to_string(optin) +
           " B): cudaFuncSetAttribute would have failed with cudaErrorInvalidValue");
    }
  } else if (cta.static_bytes != bytes) {
    fail("simt: the emulator supports one static shared object per kernel");
  }
  return cta.static_base;
}

void* dynamic_shared() { return machine().ctas[current_fiber().rank].dynamic_base; }

int cluster_rank() { return current_fiber().rank; }

int cluster_size() { return static_cast<int>(machine().ctas.size()); }

void* map_shared_rank(const void* address, int rank) {
  Machine& m = machine();
  const Fiber& f = current_fiber();
  if (rank < 0 || rank >= static_cast<int>(m.ctas.size()))
    fail("simt: map_shared_rank: no such rank");
  const Cta& mine = m.ctas[f.rank];
  Cta& other = m.ctas[rank];
  if (other.exited) {
    fail("simt: a CTA maps the shared memory of rank " + std::to_string(rank) +
         ", which has exited (a cluster.sync is missing before its exit)");
  }
  const char* a = static_cast<const char*>(address);
  if (mine.static_base != nullptr && a >= mine.static_base &&
      a < mine.static_base + mine.static_bytes) {
    if (other.static_base == nullptr) fail("simt: map_shared_rank before the other CTA started");
    return other.static_base + (a - mine.static_base);
  }
  const size_t dyn = m.shape.dynamic_shared_bytes;
  if (a >= mine.dynamic_base && a < mine.dynamic_base + dyn) {
    return other.dynamic_base + (a - mine.dynamic_base);
  }
  fail("simt: map_shared_rank of an address outside this CTA's shared memory");
}

void syncthreads(const Site& site) {
  Machine& m = machine();
  arrive(m.ctas[current_fiber().rank].barrier, WaitKind::kBlock, site);
}

void syncwarp(unsigned mask, const Site& site) {
  if (mask != 0xffffffffu) fail("simt: only full-warp masks are modelled");
  Machine& m = machine();
  const Fiber& f = current_fiber();
  arrive(m.ctas[f.rank].warps[f.warp].barrier, WaitKind::kSyncwarp, site);
}

void cluster_sync(const Site& site) { arrive(machine().cluster_barrier, WaitKind::kCluster, site); }

uint64_t warp_exchange(unsigned mask, uint64_t mine, int source_lane, uint64_t* all,
                       const Site& site) {
  if (mask != 0xffffffffu) fail("simt: only full-warp masks are modelled");
  Machine& m = machine();
  const Fiber& f = current_fiber();
  Warp& warp = m.ctas[f.rank].warps[f.warp];
  if (warp.barrier.expected != kWarpSize) fail("simt: warp collectives need whole warps");
  const int lane = f.lane;
  warp.slots[lane] = mine;
  if (source_lane >= kWarpSize) fail("simt: warp exchange from a lane past the warp");
  arrive(warp.barrier, WaitKind::kWarpCollective, site);  // every lane has deposited
  const uint64_t got = source_lane < 0 ? mine : warp.slots[source_lane];
  if (all != nullptr) std::memcpy(all, warp.slots, sizeof(warp.slots));
  arrive(warp.barrier, WaitKind::kWarpCollective, site);  // every lane has read
  return got;
}

namespace {
// Names the thread that faulted (guard page, misaligned aligned-store), on an alternate stack
// since a fiber's stack overflow faults too.
void on_fault(int signal, siginfo_t* info, void*) {
  const Machine& m = machine();
  char message[256];
  int n;
  if (m.current >= 0 && m.current < static_cast<int>(m.fibers.size())) {
    const Fiber& f = m.fibers[m.current];
    n = std::snprintf(message, sizeof(message),
                      "simt: %s at address %p in thread %u of cluster rank %d, block (%u, %u, %u): "
                      "an out-of-bounds or misaligned access\n",
                      signal == SIGBUS ? "SIGBUS" : "SIGSEGV", info->si_addr, f.state.thread_idx.x,
                      f.rank, f.state.block_idx.x, f.state.block_idx.y, f.state.block_idx.z);
  } else {
    n = std::snprintf(message, sizeof(message), "simt: fault outside device code at %p\n",
                      info->si_addr);
  }
  if (n > 0) (void)!write(2, message, static_cast<size_t>(n));
  std::signal(signal, SIG_DFL);
  std::raise(signal);
}

void install_fault_handler() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  static char alternate_stack[64 * 1024];
  stack_t ss = {};
  ss.ss_sp = alternate_stack;
  ss.ss_size = sizeof(alternate_stack);
  sigaltstack(&ss, nullptr);
  struct sigaction action = {};
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &action, nullptr);
  sigaction(SIGBUS, &action, nullptr);
}
}  // namespace

int launch(const LaunchShape& shape, const std::function<void()>& body) {
  install_fault_handler();
  constexpr int kSuccess = 0, kInvalidValue = 1, kInvalidConfiguration = 9,
                kInvalidClusterSize = 912;  // cudaError_t values
  Machine& m = machine();
  const Dim3& g = shape.grid;
  const Dim3& c = shape.cluster;
  const unsigned threads = shape.block.x * shape.block.y * shape.block.z;
  if (threads == 0 || threads > 1024 || g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 ||
      g.z > 65535) {
    return kInvalidConfiguration;
  }
  if (shape.dynamic_shared_bytes > shape.max_dynamic_shared_bytes) return kInvalidValue;
  const unsigned ranks = c.x * c.y * c.z;
  if (g.x % c.x != 0 || g.y % c.y != 0 || g.z % c.z != 0) return kInvalidClusterSize;
  if (ranks > 8 && (!shape.non_portable_cluster_allowed ||
                    ranks > static_cast<unsigned>(m.device.max_cluster))) {
    return kInvalidClusterSize;
  }
  m.shape = shape;
  m.body = &body;
  m.stats = LaunchStats();
  ++m.launches;
  // The clusters (blocks, without clusters) of the grid one after another: in grid order, or in a
  // random order under the other schedules, so that a block that reads what another block of the
  // same launch writes (which CUDA leaves unordered) gets other values.
  std::vector<Dim3> origins;
  for (unsigned z = 0; z < g.z; z += c.z) {
    for (unsigned y = 0; y < g.y; y += c.y) {
      for (unsigned x = 0; x < g.x; x += c.x) origins.push_back({x, y, z});
    }
  }
  if (m.schedule != Schedule::kForward) std::shuffle(origins.begin(), origins.end(), m.order_rng);
  for (const Dim3& origin : origins) {
    run_cluster(origin);
    ++m.stats.clusters;
  }
  m.stats.warp_collectives /= 2;  // a collective is two barrier instances (deposit, read)
  m.body = nullptr;
  m.ctas.clear();
  m.fibers.clear();
  return kSuccess;
}

GuardedMapping& GuardedMapping::operator=(GuardedMapping&& other) noexcept {
  if (this != &other) {
    release();
    std::swap(mapping_, other.mapping_);
    std::swap(mapping_bytes_, other.mapping_bytes_);
    std::swap(begin_, other.begin_);
    std::swap(end_, other.end_);
  }
  return *this;
}

void GuardedMapping::allocate(size_t bytes) {
  release();
  const size_t page = page_bytes();
  const size_t inner = (bytes + page - 1) / page * page;
  mapping_bytes_ = inner + 2 * page;
  void* m =
      mmap(nullptr, mapping_bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) fail("simt: mmap failed");
  mapping_ = static_cast<char*>(m);
  begin_ = mapping_ + page;
  end_ = begin_ + inner;
  if (inner > 0 && mprotect(begin_, inner, PROT_READ | PROT_WRITE) != 0)
    fail("simt: mprotect failed");
}

void GuardedMapping::poison() const {
  if (end_ != begin_) std::memset(begin_, 0xFF, static_cast<size_t>(end_ - begin_));
}

void GuardedMapping::protect() const {
  if (end_ != begin_) mprotect(begin_, static_cast<size_t>(end_ - begin_), PROT_NONE);
}

void GuardedMapping::release() {
  if (mapping_ != nullptr) munmap(mapping_, mapping_bytes_);
  mapping_ = nullptr;
  mapping_bytes_ = 0;
  begin_ = end_ = nullptr;
}

}  // namespace simt

#if SIMT_STACK_SWITCH
extern "C" void simt_fiber_main() {
  simt::fiber_entry();
  std::abort();
}
#endif
