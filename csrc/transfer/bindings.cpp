// hierbench._C.transfer: the engine as a few pybind11 classes. The Python facade
// (hierbench/transfer) is the public API; this layer only converts types and manages the GIL:
//   * every call that can block releases the GIL (py::gil_scoped_release);
//   * engine threads never take the GIL while holding an engine lock, so a Python thread that
//     holds the GIL may always wait for an engine lock (quick getters do so);
//   * C++ exceptions map onto hierbench.errors: TransferError, TransferTimeout, TransferClosed;
//     std::invalid_argument becomes ValueError (pybind11's default).
#include "bindings.h"

#include <torch/extension.h>

#include <pybind11/stl.h>

#include <cmath>
#include <optional>

#include "../common/py_buffer.h"
#include "crypto.h"
#include "engine.h"
#include "ingress.h"
#include "tcp.h"
#include "wire.h"

namespace py = pybind11;
using namespace pybind11::literals;

namespace hierbench::transfer {

namespace {

PyObject* g_transfer_error = nullptr;
PyObject* g_timeout_error = nullptr;
PyObject* g_closed_error = nullptr;

Nanos seconds_to_ns(double s, const char* what) {
  if (std::isnan(s) || s < 0) {
    throw std::invalid_argument(std::string(what) + " must be >= 0 seconds, got " +
                                std::to_string(s));
  }
  if (std::isinf(s) || s * 1e9 >= 9.0e18) return kNever;
  return static_cast<Nanos>(std::llround(s * 1e9));
}

Nanos timeout_ns(std::optional<double> s) {
  return s.has_value() ? seconds_to_ns(*s, "timeout") : kNever;
}

py::object time_or_none(Nanos t) {
  if (t == kNoTime) return py::none();
  return py::int_(t);
}

// Endpoints are deleted with the GIL released: closing joins engine threads, and a sender thread
// dropping the last reference to a tensor may need the GIL.
bool finalizing() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing();
#else
  return _Py_IsFinalizing();
#endif
}

void delete_endpoint(Endpoint* e) {
  if (PyGILState_Check() && !finalizing()) {
    py::gil_scoped_release release;
    delete e;
  } else {
    delete e;
  }
}

// A send slot lent to Python: a writable buffer to fill in place, then commit().
struct PySendSlot {
  std::shared_ptr<Endpoint> ep;
  int slot = -1;
  uint64_t nbytes = 0;
  uint8_t* data = nullptr;
  bool done = false;
  ~PySendSlot() {
    if (!done && ep) {
      try {
        ep->abort_slot(slot);
      } catch (...) {
      }
    }
  }
};

LinkSpec make_link(uint64_t rate_bps, uint64_t burst_bytes, double latency_s, double jitter_s,
                   uint64_t seed, const std::vector<std::pair<double, double>>& outages,
                   std::shared_ptr<Ingress> ingress) {
  LinkSpec l;
  l.ingress = std::move(ingress);
  l.rate_bps = rate_bps;
  l.burst_bytes = burst_bytes;
  l.latency = seconds_to_ns(latency_s, "latency");
  l.jitter = seconds_to_ns(jitter_s, "jitter");
  l.seed = seed;
  for (const auto& [a, b] : outages) {
    l.outages.push_back({seconds_to_ns(a, "outage start"), seconds_to_ns(b, "outage end")});
  }
  return l;
}

py::tuple record_tuple(const Record& r) {
  return py::make_tuple(r.sent ? "sent" : "received", r.seq, r.bytes, time_or_none(r.enqueued),
                        time_or_none(r.tx_start), time_or_none(r.tx_end), time_or_none(r.arrived),
                        time_or_none(r.delivered), time_or_none(r.taken));
}

py::dict stats_dict(const Stats& s) {
  py::dict d;
  d["messages_sent"] = s.messages_sent;
  d["bytes_sent"] = s.bytes_sent;
  d["messages_received"] = s.messages_received;
  d["bytes_received"] = s.bytes_received;
  d["dropped"] = s.dropped;
  d["first_tx_start_ns"] = time_or_none(s.first_tx_start);
  d["last_tx_end_ns"] = time_or_none(s.last_tx_end);
  d["link_busy_ns"] = s.link_busy;
  d["ingress_wait_ns"] = s.ingress_wait;
  d["producer_stall_ns"] = s.producer_stall;
  d["consumer_wait_ns"] = s.consumer_wait;
  d["first_rx_start_ns"] = time_or_none(s.first_rx_start);
  d["last_arrived_ns"] = time_or_none(s.last_arrived);
  d["last_delivered_ns"] = time_or_none(s.last_delivered);
  return d;
}

std::shared_ptr<Clock> clock_or_real(const std::shared_ptr<VirtualClock>& clock) {
  if (clock) return clock;
  return RealClock::instance();
}

}  // namespace

void bind(py::module_& parent) {
  py::module_ m = parent.def_submodule(
      "transfer", "The transfer engine (use the facade hierbench.transfer instead).");

  // The engine's errors are hierbench.errors classes, so `except TransferError` just works.
  py::module_ errors = py::module_::import("hierbench.errors");
  g_transfer_error = py::object(errors.attr("TransferError")).release().ptr();
  g_timeout_error = py::object(errors.attr("TransferTimeout")).release().ptr();
  g_closed_error = py::object(errors.attr("TransferClosed")).release().ptr();
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TimeoutError& e) {
      PyErr_SetString(g_timeout_error, e.what());
    } catch (const ClosedError& e) {
      PyErr_SetString(g_closed_error, e.what());
    } catch (const TransferError& e) {
      PyErr_SetString(g_transfer_error, e.what());
    }
  });

  py::class_<VirtualClock, std::shared_ptr<VirtualClock>>(m, "VirtualClock")
      .def(py::init([](double start, int participants) {
             if (participants < 0) throw std::invalid_argument("participants must be >= 0");
             return std::make_shared<VirtualClock>(seconds_to_ns(start, "start"), participants);
           }),
           "start"_a = 0.0, "participants"_a = 1)
      .def("now_ns", &VirtualClock::now)
      .def("sleep",
           [](VirtualClock& c, double s) {
             const Nanos d = seconds_to_ns(s, "sleep");
             py::gil_scoped_release release;
             c.sleep(d);
           })
      .def("join", &VirtualClock::join, py::call_guard<py::gil_scoped_release>())
      .def("leave", &VirtualClock::leave, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("running", &VirtualClock::running);

  py::class_<Ingress, std::shared_ptr<Ingress>>(m, "Ingress")
      .def(py::init<uint64_t, uint64_t>(), "rate_bps"_a, "burst_bytes"_a = 0)
      .def_static("create", &Ingress::create, "path"_a, "rate_bps"_a, "burst_bytes"_a = 0)
      .def_static("attach", &Ingress::attach, "path"_a)
      .def_property_readonly("rate_bps", &Ingress::rate_bps)
      .def_property_readonly("burst_bytes", &Ingress::burst_bytes)
      .def_property_readonly("tolerance_ns", &Ingress::tolerance)
      .def_property_readonly("path", &Ingress::path)
      .def_property_readonly("shared", &Ingress::shared)
      .def_property_readonly("tat_ns", &Ingress::tat)
      .def(
          "reserve",
          [](Ingress& g, uint64_t nbytes, Nanos t_ns) {
            const IngressGrant r = g.reserve(nbytes, t_ns);
            return py::make_tuple(r.start, r.end);
          },
          "nbytes"_a, "t_ns"_a)
      .def_property_readonly("describe", &Ingress::describe);

  py::class_<LinkSpec>(m, "LinkSpec")
      .def(py::init(&make_link), "rate_bps"_a = 0, "burst_bytes"_a = 0, "latency_s"_a = 0.0,
           "jitter_s"_a = 0.0, "seed"_a = 0,
           "outages"_a = std::vector<std::pair<double, double>>{}, "ingress"_a = nullptr)
      .def_readonly("rate_bps", &LinkSpec::rate_bps)
      .def_readonly("burst_bytes", &LinkSpec::burst_bytes)
      .def_readonly("latency_ns", &LinkSpec::latency)
      .def_readonly("jitter_ns", &LinkSpec::jitter);

  py::class_<EndpointOptions>(m, "EndpointOptions")
      .def(py::init([](int slots, int recv_slots, uint64_t slot_bytes, uint64_t max_frame_bytes,
                       double io_timeout_s, double linger_s, double handshake_timeout_s,
                       uint64_t pacing_chunk_bytes, int sndbuf, int rcvbuf) {
             if (slots < 1) throw std::invalid_argument("slots must be >= 1");
             if (recv_slots < 1) throw std::invalid_argument("recv_slots must be >= 1");
             if (sndbuf < 0 || rcvbuf < 0) throw std::invalid_argument("buffer sizes must be >= 0");
             EndpointOptions o;
             o.send_slots = slots;
             o.recv_slots = recv_slots;
             o.slot_bytes = slot_bytes;
             o.max_frame_bytes = max_frame_bytes;
             o.io_timeout = seconds_to_ns(io_timeout_s, "io_timeout");
             o.linger = seconds_to_ns(linger_s, "linger");
             o.handshake_timeout = seconds_to_ns(handshake_timeout_s, "handshake_timeout");
             o.pacing_chunk_bytes = pacing_chunk_bytes;
             o.sndbuf = sndbuf;
             o.rcvbuf = rcvbuf;
             return o;
           }),
           "slots"_a = 2, "recv_slots"_a = 4, "slot_bytes"_a = 0, "max_frame_bytes"_a = 1ull << 30,
           "io_timeout_s"_a = 30.0, "linger_s"_a = 2.0, "handshake_timeout_s"_a = 10.0,
           "pacing_chunk_bytes"_a = 0, "sndbuf"_a = 0, "rcvbuf"_a = 0)
      .def_readonly("slots", &EndpointOptions::send_slots)
      .def_readonly("recv_slots", &EndpointOptions::recv_slots)
      .def_readonly("max_frame_bytes", &EndpointOptions::max_frame_bytes);

  py::class_<PySendSlot>(m, "SendSlot", py::buffer_protocol())
      .def_buffer([](PySendSlot& s) -> py::buffer_info {
        if (s.done) throw std::invalid_argument("the slot was already committed or aborted");
        return py::buffer_info(s.data, 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(s.nbytes)}, {1}, /*readonly=*/false);
      })
      .def_readonly("nbytes", &PySendSlot::nbytes)
      .def_readonly("done", &PySendSlot::done)
      .def(
          "commit",
          [](PySendSlot& s, std::optional<uint64_t> nbytes) {
            if (s.done) throw std::invalid_argument("the slot was already committed or aborted");
            const uint64_t n = nbytes.value_or(s.nbytes);
            if (n > s.nbytes) {
              throw std::invalid_argument("commit(): " + std::to_string(n) +
                                          " bytes exceed the slot's " + std::to_string(s.nbytes));
            }
            uint64_t seq;
            {
              py::gil_scoped_release release;
              seq = s.ep->commit(s.slot, n);
            }
            s.done = true;
            return seq;
          },
          "nbytes"_a = py::none())
      .def("abort", [](PySendSlot& s) {
        if (s.done) return;
        s.done = true;
        s.ep->abort_slot(s.slot);
      });

  py::class_<Lease, std::shared_ptr<Lease>>(m, "Received", py::buffer_protocol())
      .def_buffer([](Lease& l) -> py::buffer_info {
        return py::buffer_info(l.data(), 1, py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<py::ssize_t>(l.size())}, {1}, /*readonly=*/false);
      })
      .def_property_readonly("nbytes", &Lease::size)
      .def_property_readonly("released", &Lease::released)
      .def_property_readonly("record", [](const Lease& l) { return record_tuple(l.record()); })
      .def("tobytes",
           [](const Lease& l) {
             return py::bytes(reinterpret_cast<const char*>(l.data()),
                              static_cast<py::ssize_t>(l.size()));
           })
      .def("release", &Lease::release);

  py::class_<Endpoint, std::shared_ptr<Endpoint>>(m, "Endpoint")
      .def(
          "send",
          [](Endpoint& e, const py::object& data, std::optional<double> timeout) {
            PyBufferView buf(data, false);
            const Nanos t = timeout_ns(timeout);
            py::gil_scoped_release release;
            return e.send(buf.data(), buf.size(), t);
          },
          "data"_a, "timeout"_a = py::none())
      .def(
          "send_tensor",
          [](Endpoint& e, const at::Tensor& t, std::optional<double> timeout) {
            if (!t.device().is_cpu()) {
              throw std::invalid_argument("send_tensor: the tensor is on " + t.device().str() +
                                          "; the engine sends CPU memory (move it with .cpu())");
            }
            // No copy: the slot points at the tensor's memory and keeps a reference until sent.
            auto keep = std::make_shared<at::Tensor>(t.is_contiguous() ? t : t.contiguous());
            const uint64_t n = static_cast<uint64_t>(keep->numel()) * keep->element_size();
            const void* p = keep->data_ptr();
            const Nanos to = timeout_ns(timeout);
            std::shared_ptr<void> hold = keep;
            keep.reset();
            py::gil_scoped_release release;
            const int slot = e.acquire(n, to, /*need_buffer=*/false);
            return e.commit_external(slot, p, n, std::move(hold));
          },
          "tensor"_a, "timeout"_a = py::none())
      .def(
          "acquire",
          [](const std::shared_ptr<Endpoint>& e, uint64_t nbytes, std::optional<double> timeout) {
            const Nanos to = timeout_ns(timeout);
            auto s = std::make_unique<PySendSlot>();
            {
              py::gil_scoped_release release;
              s->slot = e->acquire(nbytes, to);
              s->data = e->slot_data(s->slot);
            }
            s->ep = e;
            s->nbytes = nbytes;
            return s;
          },
          "nbytes"_a, "timeout"_a = py::none())
      .def(
          "recv",
          [](Endpoint& e, std::optional<double> timeout) {
            const Nanos to = timeout_ns(timeout);
            std::unique_ptr<Lease> l;
            {
              py::gil_scoped_release release;
              l = e.recv(to);
            }
            return std::shared_ptr<Lease>(std::move(l));
          },
          "timeout"_a = py::none())
      .def(
          "flush",
          [](Endpoint& e, std::optional<double> timeout) {
            const Nanos to = timeout_ns(timeout);
            py::gil_scoped_release release;
            e.flush(to);
          },
          "timeout"_a = py::none())
      .def(
          "close",
          [](Endpoint& e, std::optional<double> timeout) {
            const Nanos to = timeout_ns(timeout);
            py::gil_scoped_release release;
            e.close(to);
          },
          "timeout"_a = py::none())
      .def(
          "records",
          [](Endpoint& e, bool clear) {
            const std::vector<Record> rs = e.records(clear);
            py::list out;
            for (const auto& r : rs) out.append(record_tuple(r));
            return out;
          },
          "clear"_a = false)
      .def("stats", [](Endpoint& e) { return stats_dict(e.stats()); })
      .def("now_ns", &Endpoint::now)
      .def_property_readonly("epoch_ns", &Endpoint::epoch)
      .def_property_readonly("peer_max_frame", &Endpoint::peer_max_frame)
      .def("set_recv_limit", &Endpoint::set_recv_limit, py::arg("nbytes"))
      .def_property_readonly("describe", &Endpoint::describe)
      .def_property_readonly("virtual", [](const Endpoint& e) { return e.clock()->is_virtual(); });

  m.def(
      "inprocess_pair",
      [](const LinkSpec& ab, const LinkSpec& ba, const EndpointOptions& opts,
         const std::shared_ptr<VirtualClock>& clock) {
        auto [a, b] = make_inprocess_pair(clock_or_real(clock), ab, ba, opts, delete_endpoint);
        return py::make_tuple(a, b);
      },
      "link_ab"_a, "link_ba"_a, "options"_a, "clock"_a = nullptr,
      "Two endpoints joined in process: a->b over link_ab, b->a over link_ba.");

  py::class_<Listener, std::shared_ptr<Listener>>(m, "Listener")
      .def(py::init([](const std::string& host, int port, const py::bytes& secret,
                       const EndpointOptions& opts, int backlog, int max_pending,
                       bool frame_macs) {
             const std::string key(secret);
             py::gil_scoped_release release;  // scrypt: tens of milliseconds
             return std::make_shared<Listener>(host, port, key, opts, backlog, max_pending,
                                               frame_macs);
           }),
           "host"_a, "port"_a, "secret"_a, "options"_a, "backlog"_a = 128,
           "max_pending"_a = 64, "frame_macs"_a = false)
      .def_property_readonly("port", &Listener::port)
      .def_property_readonly("host", &Listener::host)
      .def_property_readonly("rejected", &Listener::rejected)
      .def(
          "accept",
          [](Listener& l, const LinkSpec& link, std::optional<double> timeout) {
            const Nanos to = timeout_ns(timeout);
            py::gil_scoped_release release;
            Connection c = l.accept(to);
            return make_tcp_endpoint(std::move(c), link, l.options(), delete_endpoint);
          },
          "link"_a, "timeout"_a = py::none())
      .def("take_rejections", &Listener::take_rejections)
      .def("close", &Listener::close);

  m.def(
      "connect",
      [](const std::string& host, int port, const py::bytes& secret, const LinkSpec& link,
         const EndpointOptions& opts, std::optional<double> timeout, bool frame_macs) {
        const std::string key(secret);
        const Nanos to = timeout_ns(timeout);
        py::gil_scoped_release release;
        Connection c = tcp_connect(host, port, key, opts, to, frame_macs);
        return make_tcp_endpoint(std::move(c), link, opts, delete_endpoint);
      },
      "host"_a, "port"_a, "secret"_a, "link"_a, "options"_a, "timeout"_a = py::none(),
      "frame_macs"_a = false);

  // Primitives, exposed so tests can hold them to hashlib/hmac and known check values.
  m.def(
      "crc32c",
      [](const py::object& data, uint32_t crc) {
        PyBufferView b(data, false);
        return crc32c(b.data(), b.size(), crc);
      },
      "data"_a, "crc"_a = 0);
  m.def("sha256", [](const py::bytes& data) {
    const std::string s(data);
    const Digest d = sha256(s.data(), s.size());
    return py::bytes(reinterpret_cast<const char*>(d.data()), d.size());
  });
  m.def("hmac_sha256", [](const py::bytes& key, const py::bytes& msg) {
    const Digest d = hmac_sha256(std::string(key), std::string(msg));
    return py::bytes(reinterpret_cast<const char*>(d.data()), d.size());
  });
  m.def("derive_key", [](const py::bytes& secret) {
    const std::string s(secret);
    Digest d;
    {
      py::gil_scoped_release nogil;
      d = derive_key(s);
    }
    return py::bytes(reinterpret_cast<const char*>(d.data()), d.size());
  });
  m.attr("PROTOCOL_VERSION") = static_cast<int>(wire::kVersion);
  m.attr("MIN_SECRET_BYTES") = static_cast<int>(wire::kMinSecretBytes);
  m.def("constant_time_equal", [](const py::bytes& a, const py::bytes& b) {
    const std::string x(a), y(b);
    return x.size() == y.size() &&
           constant_time_equal(reinterpret_cast<const uint8_t*>(x.data()),
                               reinterpret_cast<const uint8_t*>(y.data()), x.size());
  });
}

}  // namespace hierbench::transfer
