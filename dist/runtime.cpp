#include "dist/runtime.h"

#include <arpa/inet.h>
#include <mpi.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "core/check.h"
#include "core/log.h"
#include "dist/comm_backends.h"

namespace liger::dist {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}
int env_int(const char* name, int fallback) {
  const char* v = env(name);
  return v ? std::atoi(v) : fallback;
}

bool g_mpi_initialized_here = false;
WorldInfo g_world;
bool g_discovered = false;

void finalize_mpi() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Finalize();
}

}  // namespace

void DistConfig::validate() const {
  LIGER_CHECK(tp >= 1 && tp <= 4096, "--tp %lld: must be in [1, 4096]", static_cast<long long>(tp));
  LIGER_CHECK(dp >= 0 && dp <= 65536, "--dp %lld: must be in [0, 65536] (0: world size / tp)",
              static_cast<long long>(dp));
  LIGER_CHECK(backend == "auto" || backend == "mpi" || backend == "nccl" || backend == "local",
              "--dist-backend %s: expected auto, mpi, nccl or local", backend.c_str());
  LIGER_CHECK(rendezvous.empty() || rendezvous.rfind("tcp:", 0) == 0 || rendezvous.rfind("file:", 0) == 0,
              "--rendezvous %s: expected tcp:HOST:PORT or file:PATH", rendezvous.c_str());
  LIGER_CHECK(rendezvous_timeout_s > 0, "--rendezvous-timeout must be positive");
}

WorldInfo discover_world() {
  if (g_discovered) return g_world;
  WorldInfo w;
  const bool mpi_launcher = env("OMPI_COMM_WORLD_SIZE") || env("PMIX_RANK") || env("PMI_RANK");
  if (mpi_launcher) {
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
      int provided = 0;
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        LIGER_FAIL("MPI_Init failed under an MPI launcher (OMPI_COMM_WORLD_SIZE/PMIX_RANK/PMI_RANK are set)");
      g_mpi_initialized_here = true;
      std::atexit(finalize_mpi);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &w.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &w.size);
    w.mpi = true;
    w.source = "mpi";
    if (env("OMPI_COMM_WORLD_LOCAL_RANK")) {
      w.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", 0);
    } else if (env("SLURM_LOCALID")) {
      w.local_rank = env_int("SLURM_LOCALID", 0);
    } else {  // ranks sharing this node's memory, in rank order
      MPI_Comm node;
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w.rank, MPI_INFO_NULL, &node);
      MPI_Comm_rank(node, &w.local_rank);
      MPI_Comm_free(&node);
    }
  } else if (env("SLURM_NTASKS") && env_int("SLURM_NTASKS", 1) > 1) {
    w.rank = env_int("SLURM_PROCID", 0);
    w.size = env_int("SLURM_NTASKS", 1);
    w.local_rank = env_int("SLURM_LOCALID", 0);
    w.source = "slurm";
  }
  LIGER_CHECK(w.size >= 1 && w.rank >= 0 && w.rank < w.size, "rank %d of %d (from %s) is not a valid rank", w.rank,
              w.size, w.source.c_str());
  g_world = w;
  g_discovered = true;
  if (w.size > 1) {
    set_log_prefix(strfmt("[liger rank %d] ", w.rank));
    if (w.rank != 0 && log_level() == LogLevel::Info) set_log_level(LogLevel::Warn);  // progress from rank 0 only
  }
  return w;
}

bool multi_rank() {
  return g_discovered && g_world.size > 1;
}
int world_rank() {
  return g_discovered ? g_world.rank : 0;
}

[[noreturn]] void abort_job(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, code);
  _exit(code);
}

int cuda_device_for(const WorldInfo& w, int device_count) {
  LIGER_CHECK(device_count > 0, "no CUDA device is visible to rank %d", w.rank);
  return w.local_rank % device_count;
}

void agree(Communicator& world, const std::function<void()>& setup) {
  if (world.size() == 1) return setup();  // one process: the error itself, as without dist
  std::string msg;
  bool failed = false;
  try {
    setup();
  } catch (const Error& e) {
    failed = true;
    msg = e.what();
  } catch (const QuietError&) {
    failed = true;
  }
  const int64_t none = INT64_MAX;
  const int64_t first = world.all_reduce_value(failed ? static_cast<int64_t>(world.rank()) : none, ReduceOp::Min);
  if (first == none) return;
  if (first == world.rank() && !msg.empty()) {
    if (world.rank() == 0)
      std::fprintf(stderr, "liger: error: %s\n", msg.c_str());
    else
      std::fprintf(stderr, "liger: error: [rank %d] %s\n", world.rank(), msg.c_str());
    std::fflush(stderr);
  }
  throw QuietError();
}

[[noreturn]] void fail_on_every_rank(Communicator& world, const std::string& message) {
  if (world.size() == 1) LIGER_FAIL("%s", message.c_str());
  if (world.rank() == 0) {
    std::fprintf(stderr, "liger: error: %s\n", message.c_str());
    std::fflush(stderr);
  }
  throw QuietError();
}

std::unique_ptr<Runtime> Runtime::single() {
  std::unique_ptr<Runtime> rt(new Runtime());
  rt->world_ = make_local_communicator();
  rt->tp_comm_ = make_local_communicator();
  rt->dp_comm_ = make_local_communicator();
  return rt;
}

Runtime::~Runtime() = default;

std::string Runtime::describe() const {
  return strfmt("world %d = dp %d x tp %d (%s backend, ranks from %s)", info_.size, dp_, tp_,
                backend_name(world_->backend()), info_.source.c_str());
}

std::unique_ptr<Runtime> Runtime::create(const DistConfig& cfg, Device device, void* stream) {
  cfg.validate();
  const WorldInfo w = discover_world();
  std::unique_ptr<Runtime> rt(new Runtime());
  rt->info_ = w;
  // Layout checks: the same on every rank, so rank 0 alone reports them (QuietError elsewhere).
  try {
    LIGER_CHECK(w.size % cfg.tp == 0,
                "--tp %lld does not divide the world size %d (world = dp x tp; launch a multiple of %lld ranks)",
                static_cast<long long>(cfg.tp), w.size, static_cast<long long>(cfg.tp));
    const int64_t dp = w.size / cfg.tp;
    LIGER_CHECK(cfg.dp == 0 || cfg.dp == dp,
                "--dp %lld x --tp %lld = %lld ranks, but the job has %d (world size must equal dp x tp)",
                static_cast<long long>(cfg.dp), static_cast<long long>(cfg.tp), static_cast<long long>(cfg.dp * cfg.tp),
                w.size);
    rt->tp_ = static_cast<int>(cfg.tp);
    rt->dp_ = static_cast<int>(dp);
    std::string backend = cfg.backend;
    if (backend == "auto") backend = w.size == 1 ? "local" : (device == Device::CUDA ? "nccl" : "mpi");
    LIGER_CHECK(backend != "local" || w.size == 1, "--dist-backend local runs one process, but the job has %d ranks",
                w.size);
    LIGER_CHECK(backend != "mpi" || w.mpi || w.size == 1,
                "--dist-backend mpi: MPI is not available to this job (%d ranks from %s); launch with mpirun, or srun "
                "--mpi=pmix, or use GPUs with --dist-backend nccl --rendezvous tcp:HOST:PORT",
                w.size, w.source.c_str());
    LIGER_CHECK(backend != "nccl" || device == Device::CUDA,
                "--dist-backend nccl needs --device cuda (CPU ranks communicate through MPI)");
#ifndef LIGER_CUDA
    LIGER_CHECK(backend != "nccl", "--dist-backend nccl: this build of liger has no CUDA (rebuild with LIGER_CUDA=ON)");
#endif
    LIGER_CHECK(backend != "nccl" || w.mpi || !cfg.rendezvous.empty() || w.size == 1,
                "the %d NCCL ranks from %s have no MPI to exchange their unique id: pass --rendezvous tcp:HOST:PORT "
                "or file:PATH",
                w.size, w.source.c_str());
    if (backend == "local") {
      rt->world_ = make_local_communicator();
    } else if (backend == "mpi") {
      rt->world_ = w.mpi ? make_mpi_world() : make_local_communicator();
    } else {
#ifdef LIGER_CUDA
      std::vector<uint8_t> id;
      if (w.rank == 0) id = nccl_unique_id();
      if (!cfg.rendezvous.empty()) {
        id = rendezvous_share(cfg.rendezvous, w.rank, w.size, id, cfg.rendezvous_timeout_s);
      } else if (w.mpi) {
        auto mpi = make_mpi_world();
        Tensor t = Tensor::zeros({128}, DType::I32, Device::CPU);  // the 128-byte id, one byte per element
        for (size_t i = 0; i < id.size() && i < 128; i++) t.ptr<int32_t>()[i] = id[i];
        mpi->broadcast(t, 0);
        id.assign(128, 0);
        for (size_t i = 0; i < 128; i++) id[i] = static_cast<uint8_t>(t.ptr<int32_t>()[i]);
      }
      rt->world_ = make_nccl(id, w.rank, w.size, stream);
#endif
    }
  } catch (const Error& e) {
    if (w.size == 1) throw;
    if (w.rank == 0) {
      std::fprintf(stderr, "liger: error: %s\n", e.what());
      std::fflush(stderr);
    }
    throw QuietError();  // every rank exits non-zero, none waits for a collective that will not come
  }
  // tp innermost: the ranks of a tp group share dp_rank; those of a dp group share tp_rank.
  rt->tp_comm_ = rt->world_->split(rt->dp_rank(), rt->tp_rank());
  rt->dp_comm_ = rt->world_->split(rt->tp_rank(), rt->dp_rank());
  return rt;
}

// ---- rendezvous ---------------------------------------------------------------------------------------------------

namespace {

std::string job_key() {
  std::string k;
  for (const char* v : {"SLURM_JOB_ID", "SLURM_STEP_ID", "LIGER_RENDEZVOUS_KEY"})
    k += std::string(env(v) ? env(v) : "-") + ":";
  return k;
}

std::string hex_of(const std::vector<uint8_t>& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) s += d[c >> 4], s += d[c & 15];
  return s;
}
std::vector<uint8_t> bytes_of(const std::string& hex) {
  std::vector<uint8_t> b;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    b.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return b;
}

bool send_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n) {
    ssize_t k = ::send(fd, c, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    c += k, n -= static_cast<size_t>(k);
  }
  return true;
}
bool recv_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n) {
    ssize_t k = ::recv(fd, c, n, 0);
    if (k <= 0) return false;
    c += k, n -= static_cast<size_t>(k);
  }
  return true;
}

std::vector<uint8_t> tcp_share(const std::string& spec, const std::string& hostport, int rank, int size,
                               const std::vector<uint8_t>& payload, double timeout_s) {
  const size_t colon = hostport.rfind(':');
  LIGER_CHECK(colon != std::string::npos && colon > 0, "--rendezvous %s: expected tcp:HOST:PORT", spec.c_str());
  const std::string host = hostport.substr(0, colon), port = hostport.substr(colon + 1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  if (rank == 0) hints.ai_flags = AI_PASSIVE;
  int rc = getaddrinfo(rank == 0 ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  LIGER_CHECK(rc == 0 && res, "--rendezvous %s: cannot resolve %s: %s", spec.c_str(), hostport.c_str(),
              gai_strerror(rc));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, freeaddrinfo);
  const uint32_t len = static_cast<uint32_t>(payload.size());
  const std::string key = job_key();
  if (rank == 0) {
    int fd = ::socket(res->ai_family, res->ai_socktype, 0);
    LIGER_CHECK(fd >= 0, "--rendezvous %s: socket() failed", spec.c_str());
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, res->ai_addr, res->ai_addrlen) != 0 || ::listen(fd, size) != 0) {
      ::close(fd);
      LIGER_FAIL("--rendezvous %s: rank 0 cannot listen on port %s (in use?)", spec.c_str(), port.c_str());
    }
    int served = 0;
    while (served < size - 1) {
      const double left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) {
        ::close(fd);
        LIGER_FAIL("--rendezvous %s: %d of %d ranks connected within %.0f s", spec.c_str(), served + 1, size,
                   timeout_s);
      }
      timeval tv{1, 0};
      fd_set set;
      FD_ZERO(&set);
      FD_SET(fd, &set);
      if (select(fd + 1, &set, nullptr, nullptr, &tv) <= 0) continue;
      int c = ::accept(fd, nullptr, nullptr);
      if (c < 0) continue;
      const uint32_t klen = static_cast<uint32_t>(key.size());
      bool ok = send_all(c, &klen, 4) && send_all(c, key.data(), key.size()) && send_all(c, &len, 4) &&
                send_all(c, payload.data(), payload.size());
      char ack = 0;
      ok = ok && recv_all(c, &ack, 1);
      ::close(c);
      if (ok) served++;
    }
    ::close(fd);
    return payload;
  }
  while (true) {
    int fd = ::socket(res->ai_family, res->ai_socktype, 0);
    LIGER_CHECK(fd >= 0, "--rendezvous %s: socket() failed", spec.c_str());
    if (::connect(fd, res->ai_addr, res->ai_addrlen) == 0) {
      uint32_t klen = 0, n = 0;
      std::string theirs;
      std::vector<uint8_t> out;
      bool ok = recv_all(fd, &klen, 4) && klen < 4096;
      if (ok) theirs.resize(klen), ok = recv_all(fd, theirs.data(), klen);
      ok = ok && recv_all(fd, &n, 4) && n < (1u << 20);
      if (ok) out.resize(n), ok = recv_all(fd, out.data(), n);
      const char ack = 1;
      ok = ok && send_all(fd, &ack, 1);
      ::close(fd);
      LIGER_CHECK(
          !ok || theirs == key,
          "--rendezvous %s: rank 0 there belongs to another job (key %s, ours %s); use a port of this job's own",
          spec.c_str(), theirs.c_str(), key.c_str());
      if (ok) return out;
    } else {
      ::close(fd);
    }
    LIGER_CHECK(std::chrono::steady_clock::now() < deadline,
                "--rendezvous %s: rank %d could not reach rank 0 within %.0f s", spec.c_str(), rank, timeout_s);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

std::vector<uint8_t> file_share(const std::string& spec, const std::string& path, int rank,
                                const std::vector<uint8_t>& payload, double timeout_s) {
  namespace fs = std::filesystem;
  const std::string key = job_key();
  if (rank == 0) {
    const std::string tmp = path + ".tmp." + std::to_string(::getpid());
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << "liger-rendezvous 1\n" << key << "\n" << hex_of(payload) << "\n";
      f.flush();
      LIGER_CHECK(f.good(), "--rendezvous %s: cannot write %s", spec.c_str(), tmp.c_str());
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    LIGER_CHECK(!ec, "--rendezvous %s: cannot rename %s to %s: %s", spec.c_str(), tmp.c_str(), path.c_str(),
                ec.message().c_str());
    return payload;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  while (true) {
    std::ifstream f(path);
    std::string magic, theirs, hex;
    if (f && std::getline(f, magic) && std::getline(f, theirs) && std::getline(f, hex) &&
        magic == "liger-rendezvous 1" && theirs == key)
      return bytes_of(hex);
    LIGER_CHECK(std::chrono::steady_clock::now() < deadline,
                "--rendezvous %s: no file of this job's rank 0 at %s within %.0f s", spec.c_str(), path.c_str(),
                timeout_s);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

std::vector<uint8_t> rendezvous_share(const std::string& spec, int rank, int size, const std::vector<uint8_t>& payload,
                                      double timeout_s) {
  if (size == 1) return payload;
  if (spec.rfind("tcp:", 0) == 0) return tcp_share(spec, spec.substr(4), rank, size, payload, timeout_s);
  if (spec.rfind("file:", 0) == 0) return file_share(spec, spec.substr(5), rank, payload, timeout_s);
  LIGER_FAIL("--rendezvous %s: expected tcp:HOST:PORT or file:PATH", spec.c_str());
}

}  // namespace liger::dist
