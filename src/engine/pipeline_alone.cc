// join_pipeline for a build without MPI (VLMFORGE_MPI off or no MPI found): a plain process, and
// a clear error when mpirun started several copies of it.
#include <cstdlib>

#include "engine/pipeline.h"
#include "util/error.h"

namespace vlmforge {

std::unique_ptr<PipelineTransport> join_pipeline() {
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!size) size = std::getenv("PMI_SIZE");
  if (size && std::atoi(size) > 1)
    throw UsageError("this vlmforge was built without MPI, so it cannot run as one of " + std::string(size) +
                     " ranks; install libopenmpi-dev and rebuild (VLMFORGE_MPI=ON)");
  return nullptr;
}

}  // namespace vlmforge
