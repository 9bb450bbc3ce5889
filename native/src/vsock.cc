// @stereos/vsock: the thin native layer. Every function here is one or two system calls on a
// file descriptor; the stream, server and CID-allocation logic lives in TypeScript (src/*.ts).
//
// Conventions:
//  - Functions return a number: >= 0 on success, -errno on failure (libuv style). Nothing on the
//    data path throws, so EAGAIN costs no exception. TypeScript turns -errno into a Node-style
//    Error (code, errno, syscall).
//  - Argument type errors (a bug in the TypeScript layer) throw a TypeError.
//  - `Poll` wraps one uv_poll_t on the Node event loop; its callback runs through
//    napi_make_callback, so promises and process.nextTick callbacks settle after each event.
//
// Built against N-API version NAPI_VERSION (set by the build, 8): one binary loads on every Node
// release with N-API >= 8 (Node 12.22+/14.17+/16+, so 22/24/26).
#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/ioctl.h>
#include <linux/vm_sockets.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>

#ifndef AF_VSOCK
#define AF_VSOCK 40
#endif

// From <linux/vhost.h>, which does not compile as C++ (virtio_ring.h converts from void*).
#ifndef VHOST_VSOCK_SET_GUEST_CID
#define VHOST_VSOCK_SET_GUEST_CID _IOW(0xAF, 0x60, __u64)
#endif

namespace {

// ---- argument helpers -------------------------------------------------------------------------

bool TypeFail(Napi::Env env, const char* what) {
  Napi::TypeError::New(env, what).ThrowAsJavaScriptException();
  return false;
}

bool ArgInt(const Napi::CallbackInfo& info, size_t i, int64_t* out) {
  if (info.Length() <= i || !info[i].IsNumber()) return TypeFail(info.Env(), "expected a number argument");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d != d || d < -9007199254740991.0 || d > 9007199254740991.0) return TypeFail(info.Env(), "number out of range");
  *out = static_cast<int64_t>(d);
  return true;
}

bool ArgFd(const Napi::CallbackInfo& info, size_t i, int* fd) {
  int64_t v = 0;
  if (!ArgInt(info, i, &v)) return false;
  if (v < 0 || v > INT_MAX) return TypeFail(info.Env(), "invalid file descriptor");
  *fd = static_cast<int>(v);
  return true;
}

bool ArgU32(const Napi::CallbackInfo& info, size_t i, uint32_t* out) {
  int64_t v = 0;
  if (!ArgInt(info, i, &v)) return false;
  if (v < 0 || v > 0xFFFFFFFFll) return TypeFail(info.Env(), "expected an unsigned 32-bit number");
  *out = static_cast<uint32_t>(v);
  return true;
}

// A byte range of a Buffer/Uint8Array argument: (buffer, offset, length).
bool ArgBytes(const Napi::CallbackInfo& info, size_t i, uint8_t** data, size_t* len) {
  if (info.Length() <= i + 2 || !info[i].IsTypedArray()) return TypeFail(info.Env(), "expected (buffer, offset, length)");
  auto ta = info[i].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != napi_uint8_array) return TypeFail(info.Env(), "expected a Buffer or Uint8Array");
  auto u8 = ta.As<Napi::Uint8Array>();
  int64_t off = 0, n = 0;
  if (!ArgInt(info, i + 1, &off) || !ArgInt(info, i + 2, &n)) return false;
  if (off < 0 || n < 0 || static_cast<uint64_t>(off) + static_cast<uint64_t>(n) > u8.ByteLength()) {
    return TypeFail(info.Env(), "offset/length outside the buffer");
  }
  *data = u8.Data() + off;
  *len = static_cast<size_t>(n);
  return true;
}

// Out-parameter arrays (Uint32Array / Int32Array) of at least n elements.
template <typename T, napi_typedarray_type Type>
bool ArgOut(const Napi::CallbackInfo& info, size_t i, size_t n, T** out) {
  if (info.Length() <= i || !info[i].IsTypedArray()) return TypeFail(info.Env(), "expected an out array");
  auto ta = info[i].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != Type || ta.ElementLength() < n) return TypeFail(info.Env(), "wrong out array type or length");
  *out = reinterpret_cast<T*>(static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
  return true;
}

Napi::Value Ret(Napi::Env env, double v) { return Napi::Number::New(env, v); }
Napi::Value RetErr(Napi::Env env) { return Napi::Number::New(env, -errno); }
Napi::Value RetSys(Napi::Env env, long r) { return r < 0 ? RetErr(env) : Ret(env, static_cast<double>(r)); }

sockaddr_vm VmAddr(uint32_t cid, uint32_t port) {
  sockaddr_vm sa;
  std::memset(&sa, 0, sizeof sa);
  sa.svm_family = AF_VSOCK;
  sa.svm_cid = cid;
  sa.svm_port = port;
  return sa;
}

// ---- sockets ----------------------------------------------------------------------------------

// socket() -> fd: AF_VSOCK stream socket, non-blocking, close-on-exec.
Napi::Value Socket(const Napi::CallbackInfo& info) {
  return RetSys(info.Env(), socket(AF_VSOCK, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
}

// socketpair(out: Int32Array[2]) -> 0: a connected AF_UNIX stream pair, non-blocking. Not vsock:
// it lets the host tests drive the stream code (read/write/shutdown/poll are family-agnostic)
// on machines without any vsock transport.
Napi::Value SocketPair(const Napi::CallbackInfo& info) {
  int32_t* out = nullptr;
  if (!ArgOut<int32_t, napi_int32_array>(info, 0, 2, &out)) return info.Env().Undefined();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) return RetErr(info.Env());
  out[0] = sv[0];
  out[1] = sv[1];
  return Ret(info.Env(), 0);
}

// bind(fd, cid, port) -> 0
Napi::Value Bind(const Napi::CallbackInfo& info) {
  int fd = -1;
  uint32_t cid = 0, port = 0;
  if (!ArgFd(info, 0, &fd) || !ArgU32(info, 1, &cid) || !ArgU32(info, 2, &port)) return info.Env().Undefined();
  sockaddr_vm sa = VmAddr(cid, port);
  return RetSys(info.Env(), bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa));
}

// listen(fd, backlog) -> 0
Napi::Value Listen(const Napi::CallbackInfo& info) {
  int fd = -1;
  int64_t backlog = 0;
  if (!ArgFd(info, 0, &fd) || !ArgInt(info, 1, &backlog)) return info.Env().Undefined();
  if (backlog < 0) backlog = 0;
  if (backlog > INT_MAX) backlog = INT_MAX;
  return RetSys(info.Env(), listen(fd, static_cast<int>(backlog)));
}

// accept(fd, out: Uint32Array[2]) -> new fd (non-blocking, close-on-exec); out = [peer cid, port].
Napi::Value Accept(const Napi::CallbackInfo& info) {
  int fd = -1;
  uint32_t* out = nullptr;
  if (!ArgFd(info, 0, &fd) || !ArgOut<uint32_t, napi_uint32_array>(info, 1, 2, &out)) return info.Env().Undefined();
  sockaddr_vm sa;
  socklen_t len;
  int r;
  do {
    len = sizeof sa;
    std::memset(&sa, 0, sizeof sa);
    r = accept4(fd, reinterpret_cast<sockaddr*>(&sa), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (r < 0 && errno == EINTR);
  if (r < 0) return RetErr(info.Env());
  out[0] = sa.svm_family == AF_VSOCK ? sa.svm_cid : VMADDR_CID_ANY;
  out[1] = sa.svm_family == AF_VSOCK ? sa.svm_port : VMADDR_PORT_ANY;
  return Ret(info.Env(), r);
}

// connect(fd, cid, port) -> 0 when connected at once, -EINPROGRESS while pending, -errno.
Napi::Value Connect(const Napi::CallbackInfo& info) {
  int fd = -1;
  uint32_t cid = 0, port = 0;
  if (!ArgFd(info, 0, &fd) || !ArgU32(info, 1, &cid) || !ArgU32(info, 2, &port)) return info.Env().Undefined();
  sockaddr_vm sa = VmAddr(cid, port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0) return Ret(info.Env(), 0);
  // A signal during a non-blocking connect: the attempt continues in the background.
  if (errno == EINTR) return Ret(info.Env(), -EINPROGRESS);
  return RetErr(info.Env());
}

Napi::Value SockName(const Napi::CallbackInfo& info, bool peer) {
  int fd = -1;
  uint32_t* out = nullptr;
  if (!ArgFd(info, 0, &fd) || !ArgOut<uint32_t, napi_uint32_array>(info, 1, 2, &out)) return info.Env().Undefined();
  sockaddr_vm sa;
  std::memset(&sa, 0, sizeof sa);
  socklen_t len = sizeof sa;
  int r = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) : getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  if (r < 0) return RetErr(info.Env());
  if (sa.svm_family != AF_VSOCK) return Ret(info.Env(), -EAFNOSUPPORT);
  out[0] = sa.svm_cid;
  out[1] = sa.svm_port;
  return Ret(info.Env(), 0);
}
// getsockname(fd, out: Uint32Array[2]) -> 0; out = [cid, port]
Napi::Value GetSockName(const Napi::CallbackInfo& info) { return SockName(info, false); }
// getpeername(fd, out: Uint32Array[2]) -> 0; out = [cid, port]
Napi::Value GetPeerName(const Napi::CallbackInfo& info) { return SockName(info, true); }

// read(fd, buffer, offset, length) -> bytes read (0 = EOF)
Napi::Value Read(const Napi::CallbackInfo& info) {
  int fd = -1;
  uint8_t* p = nullptr;
  size_t n = 0;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, &p, &n)) return info.Env().Undefined();
  ssize_t r;
  do r = read(fd, p, n);
  while (r < 0 && errno == EINTR);
  return RetSys(info.Env(), r);
}

// write(fd, buffer, offset, length) -> bytes written. send(MSG_NOSIGNAL): no SIGPIPE.
Napi::Value Write(const Napi::CallbackInfo& info) {
  int fd = -1;
  uint8_t* p = nullptr;
  size_t n = 0;
  if (!ArgFd(info, 0, &fd) || !ArgBytes(info, 1, &p, &n)) return info.Env().Undefined();
  ssize_t r;
  do r = send(fd, p, n, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return RetSys(info.Env(), r);
}

// writev(fd, buffers: Uint8Array[]) -> bytes written (of at most the first IOV_MAX buffers).
Napi::Value Writev(const Napi::CallbackInfo& info) {
  int fd = -1;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
  if (info.Length() < 2 || !info[1].IsArray()) return TypeFail(info.Env(), "expected an array of buffers"), info.Env().Undefined();
  auto arr = info[1].As<Napi::Array>();
  uint32_t count = arr.Length();
  if (count > IOV_MAX) count = IOV_MAX;
  iovec iov[IOV_MAX];  // 16 KiB of stack
  for (uint32_t i = 0; i < count; i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      TypeFail(info.Env(), "expected an array of Buffers");
      return info.Env().Undefined();
    }
    auto u8 = v.As<Napi::Uint8Array>();
    iov[i].iov_base = u8.Data();
    iov[i].iov_len = u8.ByteLength();
  }
  msghdr msg;
  std::memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = count;
  ssize_t r;
  do r = sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return RetSys(info.Env(), r);
}

// shutdown(fd, how) -> 0; how: 0 = SHUT_RD, 1 = SHUT_WR, 2 = SHUT_RDWR
Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  int fd = -1;
  int64_t how = 0;
  if (!ArgFd(info, 0, &fd) || !ArgInt(info, 1, &how)) return info.Env().Undefined();
  return RetSys(info.Env(), shutdown(fd, static_cast<int>(how)));
}

// close(fd) -> 0. EINTR is not retried (on Linux the fd is gone either way).
Napi::Value Close(const Napi::CallbackInfo& info) {
  int fd = -1;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
  if (close(fd) < 0 && errno != EINTR) return RetErr(info.Env());
  return Ret(info.Env(), 0);
}

// soError(fd) -> the pending socket error (SO_ERROR, positive errno, 0 = none), or -errno.
Napi::Value SoError(const Napi::CallbackInfo& info) {
  int fd = -1;
  if (!ArgFd(info, 0, &fd)) return info.Env().Undefined();
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) return RetErr(info.Env());
  return Ret(info.Env(), err);
}

// setConnectTimeout(fd, ms) -> 0: SO_VM_SOCKETS_CONNECT_TIMEOUT, which also bounds non-blocking
// connects (the kernel default is 2 s).
Napi::Value SetConnectTimeout(const Napi::CallbackInfo& info) {
  int fd = -1;
  int64_t ms = 0;
  if (!ArgFd(info, 0, &fd) || !ArgInt(info, 1, &ms)) return info.Env().Undefined();
  if (ms < 1) ms = 1;
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return RetSys(info.Env(), setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv, sizeof tv));
}

// setBufferSize(fd, bytes) -> 0: SO_VM_SOCKETS_BUFFER_SIZE (raising the max first if needed).
Napi::Value SetBufferSize(const Napi::CallbackInfo& info) {
  int fd = -1;
  int64_t size = 0;
  if (!ArgFd(info, 0, &fd) || !ArgInt(info, 1, &size)) return info.Env().Undefined();
  if (size < 0) return Ret(info.Env(), -EINVAL);
  uint64_t v = static_cast<uint64_t>(size);
  uint64_t max = 0;
  socklen_t len = sizeof max;
  if (getsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_MAX_SIZE, &max, &len) == 0 && max < v) {
    if (setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_MAX_SIZE, &v, sizeof v) < 0) return RetErr(info.Env());
  }
  return RetSys(info.Env(), setsockopt(fd, AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, &v, sizeof v));
}

// ---- CIDs ---------------------------------------------------------------------------------------

// localCid() -> this machine's CID (IOCTL_VM_SOCKETS_GET_LOCAL_CID on /dev/vsock), or -errno.
Napi::Value LocalCid(const Napi::CallbackInfo& info) {
  int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return RetErr(info.Env());
  uint32_t cid = VMADDR_CID_ANY;
  int r = ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid);
  int saved = errno;
  close(fd);
  if (r < 0) return Ret(info.Env(), -saved);
  return Ret(info.Env(), cid);
}

// openVhost(path, cloexec) -> fd opened O_RDWR (with O_CLOEXEC when cloexec is true).
Napi::Value OpenVhost(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsBoolean()) {
    TypeFail(info.Env(), "expected (path, cloexec)");
    return info.Env().Undefined();
  }
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int flags = O_RDWR | (info[1].As<Napi::Boolean>().Value() ? O_CLOEXEC : 0);
  int fd = -1;
  do fd = open(path.c_str(), flags);
  while (fd < 0 && errno == EINTR);
  return RetSys(info.Env(), fd);
}

// setGuestCid(fd, cid) -> 0: VHOST_VSOCK_SET_GUEST_CID on a /dev/vhost-vsock fd. -EADDRINUSE when
// another vhost-vsock fd (any process, any user) or the guest->host transport holds the CID.
Napi::Value SetGuestCid(const Napi::CallbackInfo& info) {
  int fd = -1;
  uint32_t cid = 0;
  if (!ArgFd(info, 0, &fd) || !ArgU32(info, 1, &cid)) return info.Env().Undefined();
  uint64_t v = cid;
  return RetSys(info.Env(), ioctl(fd, VHOST_VSOCK_SET_GUEST_CID, &v));
}

// ---- Poll: uv_poll_t with a JS callback ---------------------------------------------------------

class Poll;

// Per-environment state (main thread and each worker): the live poll handles, closed by an async
// cleanup hook when the environment goes away, so a worker can exit with sockets still open.
struct EnvData {
  Poll* live = nullptr;  // intrusive list through Poll::prev_/next_
  napi_async_cleanup_hook_handle hook = nullptr;
  size_t closing = 0;
  bool tearing_down = false;
};

void FinishTeardown(EnvData* data) {
  if (data->tearing_down && data->closing == 0 && data->hook != nullptr) {
    napi_async_cleanup_hook_handle h = data->hook;
    data->hook = nullptr;
    napi_remove_async_cleanup_hook(h);
  }
}

struct PollHandle {
  uv_poll_t uv;
  Poll* owner;  // null once detached from its JS object
  EnvData* data;
};

void OnHandleClosed(uv_handle_t* h) {
  PollHandle* ph = reinterpret_cast<PollHandle*>(h);
  EnvData* data = ph->data;
  delete ph;
  data->closing--;
  FinishTeardown(data);
}

// new Poll(fd, callback(status, events)): status < 0 is a libuv error (the handle is then stopped;
// on a socket, read SO_ERROR for the cause). start(events) with UV_READABLE | UV_WRITABLE |
// UV_DISCONNECT; start(0) or stop() stops. The Poll (and its callback) stays alive until close(),
// which releases the handle; call it before closing the fd. Only a started, ref'ed Poll keeps the
// event loop alive.
class Poll : public Napi::ObjectWrap<Poll> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Poll",
                       {InstanceMethod("start", &Poll::Start), InstanceMethod("stop", &Poll::Stop),
                        InstanceMethod("close", &Poll::CloseJs), InstanceMethod("ref", &Poll::RefJs),
                        InstanceMethod("unref", &Poll::UnrefJs)});
  }

  Poll(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Poll>(info) {
    Napi::Env env = info.Env();
    data_ = env.GetInstanceData<EnvData>();
    int fd = -1;
    if (!ArgFd(info, 0, &fd)) return;
    if (info.Length() < 2 || !info[1].IsFunction()) {
      TypeFail(env, "expected (fd, callback)");
      return;
    }
    if (data_ == nullptr || data_->tearing_down) {
      Napi::Error::New(env, "environment is shutting down").ThrowAsJavaScriptException();
      return;
    }
    PollHandle* ph = new PollHandle();
    ph->owner = this;
    ph->data = data_;
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      delete ph;
      Napi::Error::New(env, "no event loop").ThrowAsJavaScriptException();
      return;
    }
    int r = uv_poll_init(loop, &ph->uv, fd);
    if (r < 0) {
      delete ph;
      Napi::Error e = Napi::Error::New(env, std::string("uv_poll_init: ") + uv_strerror(r));
      e.Set("code", Napi::String::New(env, uv_err_name(r)));
      e.Set("errno", Napi::Number::New(env, r));
      e.Set("syscall", Napi::String::New(env, "uv_poll_init"));
      e.ThrowAsJavaScriptException();
      return;
    }
    ph_ = ph;
    // Like a Node handle, the Poll (and its callback) lives until close(): a paused socket that
    // nothing else references must not be collected with its fd still open.
    Ref();
    strong_ = true;
    next_ = data_->live;
    if (next_ != nullptr) next_->prev_ = this;
    data_->live = this;
    cb_ = Napi::Persistent(info[1].As<Napi::Function>());
    napi_async_init(env, info.This(), Napi::String::New(env, "StereosVsockPoll"), &async_);
  }

  ~Poll() override {
    // Collected while the handle is still open (the JS side dropped it without close()).
    Release();
    if (async_ != nullptr) {
      napi_async_destroy(Env(), async_);
      async_ = nullptr;
    }
  }

  // Environment teardown: close without calling back into JS.
  void Teardown() { Release(); }

 private:
  void Release() {
    if (ph_ == nullptr) return;
    PollHandle* ph = ph_;
    ph_ = nullptr;
    ph->owner = nullptr;
    if (prev_ != nullptr) prev_->next_ = next_;
    else data_->live = next_;
    if (next_ != nullptr) next_->prev_ = prev_;
    prev_ = next_ = nullptr;
    data_->closing++;
    uv_close(reinterpret_cast<uv_handle_t*>(&ph->uv), OnHandleClosed);
    if (strong_) {
      strong_ = false;
      Unref();
    }
  }

  static void OnPoll(uv_poll_t* h, int status, int events) {
    PollHandle* ph = reinterpret_cast<PollHandle*>(h);
    Poll* self = ph->owner;
    if (self == nullptr) return;
    // libuv stops the handle itself when it reports an error.
    if (status < 0) self->events_ = 0;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    Napi::Object recv = self->Value();
    napi_value argv[2] = {Napi::Number::New(env, status), Napi::Number::New(env, events)};
    napi_value fn = self->cb_.Value();
    napi_value result;
    napi_status st = napi_make_callback(env, self->async_, recv, fn, 2, argv, &result);
    if (st == napi_pending_exception || env.IsExceptionPending()) {
      napi_value err;
      if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
    }
  }

  // start(events) -> 0 or a negative libuv error
  Napi::Value Start(const Napi::CallbackInfo& info) {
    int64_t ev = 0;
    if (!ArgInt(info, 0, &ev)) return info.Env().Undefined();
    if (ph_ == nullptr) return Ret(info.Env(), UV_EBADF);
    int events = static_cast<int>(ev) & (UV_READABLE | UV_WRITABLE | UV_DISCONNECT);
    int r;
    if (events == 0) {
      r = uv_poll_stop(&ph_->uv);
    } else {
      r = uv_poll_start(&ph_->uv, events, OnPoll);
    }
    if (r == 0) events_ = events;
    return Ret(info.Env(), r);
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (ph_ == nullptr) return Ret(info.Env(), 0);
    int r = uv_poll_stop(&ph_->uv);
    events_ = 0;
    return Ret(info.Env(), r);
  }

  Napi::Value CloseJs(const Napi::CallbackInfo& info) {
    Release();
    if (!cb_.IsEmpty()) cb_.Reset();
    if (async_ != nullptr) {
      napi_async_destroy(info.Env(), async_);
      async_ = nullptr;
    }
    return info.Env().Undefined();
  }

  Napi::Value RefJs(const Napi::CallbackInfo& info) {
    if (ph_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&ph_->uv));
    return info.Env().Undefined();
  }

  Napi::Value UnrefJs(const Napi::CallbackInfo& info) {
    if (ph_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&ph_->uv));
    return info.Env().Undefined();
  }

  EnvData* data_ = nullptr;
  PollHandle* ph_ = nullptr;
  Napi::FunctionReference cb_;
  napi_async_context async_ = nullptr;
  int events_ = 0;
  bool strong_ = false;

 public:
  Poll* prev_ = nullptr;
  Poll* next_ = nullptr;
};

void OnAsyncCleanup(napi_async_cleanup_hook_handle, void* arg) {
  EnvData* data = static_cast<EnvData*>(arg);
  data->tearing_down = true;
  while (data->live != nullptr) data->live->Teardown();  // unlinks itself
  FinishTeardown(data);
}

void FreeEnvData(Napi::Env, EnvData* data) {
  // Finalizers of Poll objects have run (or run later and find live empty); handles whose close
  // is still pending reference `data`, so leak it in that (teardown-only) case.
  if (data->closing == 0) delete data;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  EnvData* data = new EnvData();
  env.SetInstanceData<EnvData, FreeEnvData>(data);
  napi_add_async_cleanup_hook(env, OnAsyncCleanup, data, &data->hook);

  exports.Set("socket", Napi::Function::New(env, Socket, "socket"));
  exports.Set("socketpair", Napi::Function::New(env, SocketPair, "socketpair"));
  exports.Set("bind", Napi::Function::New(env, Bind, "bind"));
  exports.Set("listen", Napi::Function::New(env, Listen, "listen"));
  exports.Set("accept", Napi::Function::New(env, Accept, "accept"));
  exports.Set("connect", Napi::Function::New(env, Connect, "connect"));
  exports.Set("getsockname", Napi::Function::New(env, GetSockName, "getsockname"));
  exports.Set("getpeername", Napi::Function::New(env, GetPeerName, "getpeername"));
  exports.Set("read", Napi::Function::New(env, Read, "read"));
  exports.Set("write", Napi::Function::New(env, Write, "write"));
  exports.Set("writev", Napi::Function::New(env, Writev, "writev"));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown, "shutdown"));
  exports.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("soError", Napi::Function::New(env, SoError, "soError"));
  exports.Set("setConnectTimeout", Napi::Function::New(env, SetConnectTimeout, "setConnectTimeout"));
  exports.Set("setBufferSize", Napi::Function::New(env, SetBufferSize, "setBufferSize"));
  exports.Set("localCid", Napi::Function::New(env, LocalCid, "localCid"));
  exports.Set("openVhost", Napi::Function::New(env, OpenVhost, "openVhost"));
  exports.Set("setGuestCid", Napi::Function::New(env, SetGuestCid, "setGuestCid"));
  exports.Set("Poll", Poll::Define(env));

  Napi::Object c = Napi::Object::New(env);
  c.Set("AF_VSOCK", AF_VSOCK);
  c.Set("VMADDR_CID_ANY", static_cast<double>(VMADDR_CID_ANY));
  c.Set("VMADDR_CID_HYPERVISOR", static_cast<double>(VMADDR_CID_HYPERVISOR));
  c.Set("VMADDR_CID_LOCAL", static_cast<double>(VMADDR_CID_LOCAL));
  c.Set("VMADDR_CID_HOST", static_cast<double>(VMADDR_CID_HOST));
  c.Set("VMADDR_PORT_ANY", static_cast<double>(VMADDR_PORT_ANY));
  c.Set("UV_READABLE", static_cast<double>(UV_READABLE));
  c.Set("UV_WRITABLE", static_cast<double>(UV_WRITABLE));
  c.Set("UV_DISCONNECT", static_cast<double>(UV_DISCONNECT));
  c.Set("SHUT_RD", static_cast<double>(SHUT_RD));
  c.Set("SHUT_WR", static_cast<double>(SHUT_WR));
  c.Set("SHUT_RDWR", static_cast<double>(SHUT_RDWR));
  c.Set("NAPI_VERSION", static_cast<double>(NAPI_VERSION));
  c.Set("IOV_MAX", static_cast<double>(IOV_MAX));
  exports.Set("constants", c);
  return exports;
}

}  // namespace

NODE_API_MODULE(stereos_vsock, Init)
