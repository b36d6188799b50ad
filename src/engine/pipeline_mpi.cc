// The pipeline's transport over MPI (Open MPI, MPICH): the only file that includes mpi.h.
// Waits poll non-blocking requests with a deadline, sleeping between polls so that a rank waiting
// for its neighbours leaves the cores to the rank computing (ranks share a machine's cores in the
// tests and on small hosts; MPI's own blocking waits spin).
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <thread>

#include "engine/pipeline.h"
#include "util/error.h"

namespace vlmforge {
namespace {

using Clock = std::chrono::steady_clock;

// Polls `done` until it returns true or `timeout_seconds` passed (negative: no limit): busy for
// the first 100 µs (a neighbour that answers at once costs no sleep), then every 50 µs.
template <typename Done>
bool poll_until(Done done, double timeout_seconds) {
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_seconds));
  for (;;) {
    if (done()) return true;
    const auto now = Clock::now();
    if (timeout_seconds >= 0 && now >= deadline) return false;
    if (now - start > std::chrono::microseconds(100)) std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

void check(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw PipelineFailure(std::string(what) + " failed: " + std::string(text, static_cast<size_t>(length)));
}

constexpr int kTag = 14;

class MpiTransport : public PipelineTransport {
 public:
  MpiTransport() {
    int provided = 0;
    // Deploy steps the model on its scheduler thread, not the one that initialised MPI.
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (provided < MPI_THREAD_SERIALIZED) {
      MPI_Finalize();
      throw Error("the MPI library does not support MPI_THREAD_SERIALIZED, which the pipeline needs");
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    char name[MPI_MAX_PROCESSOR_NAME];
    int length = 0;
    MPI_Get_processor_name(name, &length);
    hosts_ = all_gather(std::string(name, static_cast<size_t>(length)));
  }
  ~MpiTransport() override { MPI_Finalize(); }
  MpiTransport(const MpiTransport&) = delete;
  MpiTransport& operator=(const MpiTransport&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& host(int rank) const override { return hosts_.at(static_cast<size_t>(rank)); }

  bool send(int to, const std::vector<uint8_t>& message, double timeout_seconds) override {
    if (message.size() > static_cast<size_t>(INT_MAX)) throw Error("pipeline message over 2 GiB");
    MPI_Request request;
    check(MPI_Isend(message.data(), static_cast<int>(message.size()), MPI_BYTE, to, kTag, MPI_COMM_WORLD, &request),
          "MPI_Isend");
    int done = 0;
    return poll_until([&] {
      check(MPI_Test(&request, &done, MPI_STATUS_IGNORE), "MPI_Test");
      return done != 0;
    }, timeout_seconds);
  }

  bool receive(int from, std::vector<uint8_t>& message, double timeout_seconds) override {
    int ready = 0;
    MPI_Status status;
    if (!poll_until([&] {
          check(MPI_Iprobe(from, kTag, MPI_COMM_WORLD, &ready, &status), "MPI_Iprobe");
          return ready != 0;
        }, timeout_seconds))
      return false;
    int count = 0;
    check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
    message.resize(static_cast<size_t>(count));
    check(MPI_Recv(message.data(), count, MPI_BYTE, from, kTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE), "MPI_Recv");
    return true;
  }

  std::vector<std::string> all_gather(const std::string& mine) override {
    const int length = static_cast<int>(mine.size());
    std::vector<int> lengths(static_cast<size_t>(size_)), offsets(static_cast<size_t>(size_));
    check(MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, MPI_COMM_WORLD), "MPI_Allgather");
    int total = 0;
    for (int r = 0; r < size_; ++r) {
      offsets[static_cast<size_t>(r)] = total;
      total += lengths[static_cast<size_t>(r)];
    }
    std::string all(static_cast<size_t>(total), '\0');
    check(MPI_Allgatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
                         MPI_COMM_WORLD),
          "MPI_Allgatherv");
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r)
      out.push_back(all.substr(static_cast<size_t>(offsets[static_cast<size_t>(r)]),
                               static_cast<size_t>(lengths[static_cast<size_t>(r)])));
    return out;
  }

  [[noreturn]] void abort(int code) override {
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
  }

 private:
  int rank_ = 0, size_ = 1;
  std::vector<std::string> hosts_;
};

}  // namespace

std::unique_ptr<PipelineTransport> join_pipeline() {
  // Only a job of several ranks initialises MPI: a plain run (or -np 1) stays a plain process.
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!size) size = std::getenv("PMI_SIZE");
  if (!size || std::atoi(size) <= 1) return nullptr;
  return std::make_unique<MpiTransport>();
}

}  // namespace vlmforge
