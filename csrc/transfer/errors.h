// The engine's exception types. Engine threads never let one escape: they store it as a
// std::exception_ptr and the next call on the endpoint rethrows it (STYLE.md section 4).
// bindings.cpp maps them onto Python: TransferError -> hierbench.errors.TransferError,
// TimeoutError -> TransferTimeout (also a builtin TimeoutError), ClosedError -> TransferClosed
// (also an EOFError). Misuse throws std::invalid_argument (-> ValueError).
#pragma once

#include <stdexcept>
#include <string>

namespace hierbench::transfer {

// A transport or engine failure; the message names the cause.
struct TransferError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A blocking call ran past its timeout. The endpoint stays usable.
struct TimeoutError : TransferError {
  using TransferError::TransferError;
};

// The channel was closed, cleanly, by this side or by the peer.
struct ClosedError : TransferError {
  using TransferError::TransferError;
};

}  // namespace hierbench::transfer
