#include "ingress.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>

#include "errors.h"

namespace hierbench::transfer {

namespace {

static_assert(std::atomic<Nanos>::is_always_lock_free,
              "the shared ingress needs a lock-free 64-bit atomic (shared between processes)");
static_assert(sizeof(std::atomic<Nanos>) == sizeof(Nanos));

// The shared file: this header, in native byte order (one machine), then nothing else.
constexpr char kMagic[8] = {'H', 'B', 'I', 'N', 'G', 'R', 'E', 'S'};
constexpr uint32_t kVersion = 1;

struct FileLayout {
  char magic[8];
  uint32_t version;
  uint32_t header_bytes;  // sizeof(FileLayout)
  uint64_t rate_bps;
  uint64_t burst_bytes;
  int64_t tau_ns;  // ceil(8 burst 1e9 / rate): checked against rate and burst on attach
  alignas(64) std::atomic<Nanos> tat;
  char reserved[56];
};
static_assert(sizeof(FileLayout) == 128);
static_assert(std::is_standard_layout_v<FileLayout>);

std::string errno_text(int e) { return std::strerror(e); }

std::string rate_text(uint64_t rate_bps, uint64_t burst_bytes) {
  return std::to_string(rate_bps) + " bit/s, burst " + std::to_string(burst_bytes) + " B";
}

void check_rate(uint64_t rate_bps) {
  if (rate_bps == 0) {
    throw std::invalid_argument("an ingress rate must be >= 1 bit/s, got 0 (an ingress always "
                                "shapes: leave it out for an unshared link)");
  }
}

// A file descriptor closed on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

Nanos Gcra::cost(uint64_t bytes, uint64_t rate_bps) {
  const unsigned __int128 bits_e9 = static_cast<unsigned __int128>(bytes) * 8'000'000'000ULL;
  const unsigned __int128 ns = (bits_e9 + rate_bps - 1) / rate_bps;  // ceil
  return ns > static_cast<unsigned __int128>(kMaxNs) ? kMaxNs : static_cast<Nanos>(ns);
}

Gcra::Step Gcra::step(Nanos tat, Nanos tau, Nanos cost, Nanos t) {
  Step s;
  s.tat = add_sat(std::max(tat, t), cost);
  s.grant.start = std::max(t, tat - tau);
  s.grant.end = std::max(t, s.tat - tau);
  return s;
}

Ingress::Ingress(uint64_t rate_bps, uint64_t burst_bytes)
    : rate_bps_(rate_bps), burst_bytes_(burst_bytes), tat_(&local_) {
  check_rate(rate_bps);
  tau_ = Gcra::cost(burst_bytes, rate_bps);
}

Ingress::Ingress(FileTag, std::string path, void* map, uint64_t map_bytes)
    : path_(std::move(path)), map_(map), map_bytes_(map_bytes) {
  auto* f = static_cast<FileLayout*>(map);
  rate_bps_ = f->rate_bps;
  burst_bytes_ = f->burst_bytes;
  tau_ = f->tau_ns;
  tat_ = &f->tat;
}

Ingress::~Ingress() {
  if (map_) ::munmap(map_, map_bytes_);
}

std::shared_ptr<Ingress> Ingress::create(const std::string& path, uint64_t rate_bps,
                                         uint64_t burst_bytes) {
  check_rate(rate_bps);
  if (path.empty()) throw std::invalid_argument("an ingress file needs a path");
  // Written whole under a private name, then linked to `path`: no process ever maps a
  // half-written header, and link() refuses an existing file (two creators: one wins).
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  Fd fd{::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600)};
  if (fd.fd < 0) {
    throw TransferError("cannot create the ingress file " + tmp + ": " + errno_text(errno));
  }
  void* map = MAP_FAILED;
  try {
    if (::ftruncate(fd.fd, sizeof(FileLayout)) != 0) {
      throw TransferError("cannot size the ingress file " + tmp + ": " + errno_text(errno));
    }
    map = ::mmap(nullptr, sizeof(FileLayout), PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd, 0);
    if (map == MAP_FAILED) {
      throw TransferError("cannot map the ingress file " + tmp + ": " + errno_text(errno));
    }
    auto* f = static_cast<FileLayout*>(map);
    std::memcpy(f->magic, kMagic, sizeof kMagic);
    f->version = kVersion;
    f->header_bytes = sizeof(FileLayout);
    f->rate_bps = rate_bps;
    f->burst_bytes = burst_bytes;
    f->tau_ns = Gcra::cost(burst_bytes, rate_bps);
    new (&f->tat) std::atomic<Nanos>(Gcra::kFull);
    if (::link(tmp.c_str(), path.c_str()) != 0) {
      const int e = errno;
      if (e == EEXIST) {
        throw TransferError("the ingress file " + path +
                            " already exists: attach to it, or remove it if it is left over "
                            "from an earlier run");
      }
      throw TransferError("cannot create the ingress file " + path + ": " + errno_text(e));
    }
  } catch (...) {
    if (map != MAP_FAILED) ::munmap(map, sizeof(FileLayout));
    ::unlink(tmp.c_str());
    throw;
  }
  ::unlink(tmp.c_str());
  return std::shared_ptr<Ingress>(new Ingress(FileTag{}, path, map, sizeof(FileLayout)));
}

std::shared_ptr<Ingress> Ingress::attach(const std::string& path) {
  if (path.empty()) throw std::invalid_argument("an ingress file needs a path");
  Fd fd{::open(path.c_str(), O_RDWR | O_CLOEXEC)};
  if (fd.fd < 0) {
    const int e = errno;
    if (e == ENOENT) {
      throw TransferError("the ingress file " + path +
                          " does not exist: create it first (Ingress.create)");
    }
    throw TransferError("cannot open the ingress file " + path + ": " + errno_text(e));
  }
  struct stat st;
  if (::fstat(fd.fd, &st) != 0) {
    throw TransferError("cannot stat the ingress file " + path + ": " + errno_text(errno));
  }
  if (static_cast<uint64_t>(st.st_size) != sizeof(FileLayout)) {
    throw TransferError(path + " is not an ingress file: it has " + std::to_string(st.st_size) +
                        " bytes, an ingress file has " + std::to_string(sizeof(FileLayout)));
  }
  void* map = ::mmap(nullptr, sizeof(FileLayout), PROT_READ | PROT_WRITE, MAP_SHARED, fd.fd, 0);
  if (map == MAP_FAILED) {
    throw TransferError("cannot map the ingress file " + path + ": " + errno_text(errno));
  }
  const auto* f = static_cast<const FileLayout*>(map);
  std::string bad;
  if (std::memcmp(f->magic, kMagic, sizeof kMagic) != 0) {
    bad = "it does not start with the magic HBINGRES";
  } else if (f->version != kVersion) {
    bad = "it has format version " + std::to_string(f->version) + ", this build reads version " +
          std::to_string(kVersion);
  } else if (f->header_bytes != sizeof(FileLayout)) {
    bad = "its header declares " + std::to_string(f->header_bytes) + " bytes, not " +
          std::to_string(sizeof(FileLayout));
  } else if (f->rate_bps == 0) {
    bad = "its rate is 0 bit/s";
  } else if (f->tau_ns != Gcra::cost(f->burst_bytes, f->rate_bps)) {
    bad = "its tolerance " + std::to_string(f->tau_ns) + " ns does not match its " +
          rate_text(f->rate_bps, f->burst_bytes);
  }
  if (!bad.empty()) {
    ::munmap(map, sizeof(FileLayout));
    throw TransferError(path + " is not a valid ingress file: " + bad);
  }
  return std::shared_ptr<Ingress>(new Ingress(FileTag{}, path, map, sizeof(FileLayout)));
}

IngressGrant Ingress::reserve(uint64_t bytes, Nanos t) {
  // A chunk that could never start (its own link's schedule runs past centuries) takes nothing:
  // it must not push a state that other endpoints and processes share out of reach.
  if (t >= Gcra::kMaxNs) return {kNever, kNever};
  const Nanos c = Gcra::cost(bytes, rate_bps_);
  Nanos cur = tat_->load(std::memory_order_acquire);
  for (;;) {
    const Gcra::Step s = Gcra::step(cur, tau_, c, t);
    if (tat_->compare_exchange_weak(cur, s.tat, std::memory_order_acq_rel,
                                    std::memory_order_acquire)) {
      return s.grant;
    }
  }
}

void Ingress::bind(const std::shared_ptr<Clock>& clock) {
  if (shared() && clock->is_virtual()) {
    throw std::invalid_argument(
        "the shared ingress " + path_ +
        " runs on the machine's monotonic clock (its processes share it) and cannot serve an "
        "endpoint on a VirtualClock: use an in-process ingress for virtual-time runs");
  }
  std::lock_guard<std::mutex> lk(bind_m_);
  if (!bound_) {
    clock_ = clock;
    bound_ = true;
  } else if (clock_.lock() != clock) {
    throw std::invalid_argument(
        "this ingress already serves endpoints on another clock: its state is a time on that "
        "clock (make one ingress per clock)");
  }
}

std::string Ingress::describe() const {
  return "ingress " + rate_text(rate_bps_, burst_bytes_) +
         (shared() ? " (shared: " + path_ + ")" : " (in-process)");
}

}  // namespace hierbench::transfer
