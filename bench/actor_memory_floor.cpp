// actor_memory_floor: what N live CAF actors cost before any aggregate state. It spawns N idle
// event-based actors, each with a one-handler behavior and nothing else (no state, no monitor,
// no timer), keeps their handles as the router would, and reads this process's RSS before and
// after. cqrsd keeps one such actor per live aggregate, plus its state, so the figure is a floor
// under cqrsd's memory per live aggregate (see docs/BENCHMARKS.md, "Memory per aggregate").
//
// usage: actor_memory_floor [--actors N] [--budget-mib M]   (defaults: 1000000 and 1024)
#include <caf/all.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace {

// VmRSS of this process, in bytes (0 when /proc is unreadable).
size_t rss_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10) * 1024;
  }
  return 0;
}

caf::behavior idle_actor(caf::event_based_actor*) {
  return {
      [](int value) { return value; },
  };
}

class FloorConfig : public caf::actor_system_config {
 public:
  FloorConfig() {
    set("logger.verbosity", caf::atom("quiet"));
    set("scheduler.max-threads", size_t{1});
  }
};

}  // namespace

int main(int argc, char** argv) {
  size_t actors = 1'000'000;
  double budget_mib = 1024;
  for (int idx = 1; idx < argc; ++idx) {
    std::string_view arg = argv[idx];
    if (arg == "--actors" && idx + 1 < argc) {
      actors = std::strtoull(argv[++idx], nullptr, 10);
    } else if (arg == "--budget-mib" && idx + 1 < argc) {
      budget_mib = std::atof(argv[++idx]);
    } else {
      std::fprintf(stderr, "usage: actor_memory_floor [--actors N] [--budget-mib M]\n");
      return 2;
    }
  }
  if (actors == 0 || budget_mib <= 0) {
    std::fprintf(stderr, "actor_memory_floor: --actors and --budget-mib must be positive\n");
    return 2;
  }
  FloorConfig cfg;
  caf::actor_system system{cfg};
  std::vector<caf::actor> handles;
  handles.reserve(actors);  // the handles' 8 bytes each count: the router holds one per actor
  size_t before = rss_bytes();
  for (size_t idx = 0; idx < actors; ++idx) handles.push_back(system.spawn(idle_actor));
  // Every actor has started (an event-based actor initializes on its first scheduling); a
  // request to the last one returns after the ones spawned before it ran on the single thread.
  caf::scoped_actor self{system};
  self->request(handles.back(), caf::infinite, 1).receive([](int) {}, [](caf::error&) {});
  size_t after = rss_bytes();

  double per_actor = static_cast<double>(after - before) / static_cast<double>(actors);
  double budget_per_actor = budget_mib * 1024 * 1024 / static_cast<double>(actors);
  std::printf("CAF %d.%d.%d, sizeof(caf::event_based_actor) %zu B\n", CAF_VERSION / 10000,
              CAF_VERSION / 100 % 100, CAF_VERSION % 100, sizeof(caf::event_based_actor));
  std::printf("%zu idle actors: RSS %.0f MiB before, %.0f MiB after: %.0f B per actor\n", actors,
              static_cast<double>(before) / (1024 * 1024),
              static_cast<double>(after) / (1024 * 1024), per_actor);
  std::printf(
      "budget %.0f MiB for %zu aggregates: %.0f B each; the bare actors alone use %.0f%% "
      "of it: %s\n",
      budget_mib, actors, budget_per_actor, 100 * per_actor / budget_per_actor,
      per_actor < budget_per_actor ? "within the budget, before any aggregate state"
                                   : "OVER the budget before any aggregate state");
  for (caf::actor& handle : handles) caf::anon_send_exit(handle, caf::exit_reason::user_shutdown);
  handles.clear();
  return 0;
}
