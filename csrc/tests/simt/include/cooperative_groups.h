// simt's stand-in for <cooperative_groups.h>: the thread-block cluster group.
#pragma once

#include "cuda_runtime.h"

namespace cooperative_groups {

class cluster_group {
 public:
  unsigned block_rank() const { return static_cast<unsigned>(simt::cluster_rank()); }
  unsigned num_blocks() const { return static_cast<unsigned>(simt::cluster_size()); }
  template <typename T>
  T* map_shared_rank(T* address, unsigned rank) const {
    return static_cast<T*>(simt::map_shared_rank(address, static_cast<int>(rank)));
  }
  void sync(SIMT_SITE_PARAMETERS) const { simt::cluster_sync({"cluster.sync", file, line}); }
};

inline cluster_group this_cluster() { return cluster_group(); }

}  // namespace cooperative_groups
