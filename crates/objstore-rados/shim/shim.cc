// The librados calls rbdx needs that only the C++ API offers, wrapped as C functions over the
// C API's handles. Every result is returned as one malloc'd buffer in a simple little-endian
// layout that src/shim_reader.rs reads; rbdx_free releases it. Errors are negative errno values.

#include <rados/librados.h>
#include <rados/librados.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

struct Out {
  std::string bytes;
  void u32(uint32_t v) { bytes.append(reinterpret_cast<const char*>(&v), 4); }
  void u64(uint64_t v) { bytes.append(reinterpret_cast<const char*>(&v), 8); }
  void str(const std::string& s) { u32(static_cast<uint32_t>(s.size())); bytes.append(s); }
  int finish(char** buf, size_t* len) {
    *len = bytes.size();
    *buf = static_cast<char*>(std::malloc(bytes.size() ? bytes.size() : 1));
    if (*buf == nullptr) return -ENOMEM;
    std::memcpy(*buf, bytes.data(), bytes.size());
    return 0;
  }
};

}  // namespace

extern "C" {

void rbdx_free(char* buf) { std::free(buf); }

typedef void (*rbdx_read_done)(void* arg, int r, int failed_step, const char* out, size_t len,
                               void* owner);

}  // extern "C"

// A compound read, run as one asynchronous librados operation so that every output reflects
// one version (rbdx_aio_read_op).
// Input: u32 n, n steps, each a u8 kind then its fields:
//   1 stat | 2 read: u64 off, u64 len (0: to the end) | 3 sparse read: u64 off, u64 len
//   4 omap vals: str start_after, str prefix, u64 max | 5 omap by keys: u32 n, n * str
//   6 getxattr: str name | 7 getxattrs
// Output: u64 version, then per step:
//   stat: u64 size, i64 sec, u32 nsec | read: ref | sparse: u32 n, n * (u64 off, u64 len), ref |
//   omap vals: u8 more, u32 n, n * (str key, str value) | by keys: u32 n, n * (str, str) |
//   getxattr: str value | getxattrs: u32 n, n * (str, str)
// where a ref is u64 len, u64 address: read data is not copied but left in librados' buffers,
// which live as long as the job.
// When it finishes, `done` gets a negative errno and the step at fault (-1: none), or 0, the
// encoded outputs and the job that owns them all, which the receiver frees with
// rbdx_read_release.
namespace {
struct In {
  const char* p;
  const char* end;
  bool ok = true;
  uint32_t u32() { uint32_t v = 0; take(&v, 4); return v; }
  uint64_t u64() { uint64_t v = 0; take(&v, 8); return v; }
  uint8_t u8() { uint8_t v = 0; take(&v, 1); return v; }
  std::string str() {
    uint32_t n = u32();
    if (!ok || static_cast<size_t>(end - p) < n) { ok = false; return {}; }
    std::string s(p, n);
    p += n;
    return s;
  }
  void take(void* dst, size_t n) {
    if (!ok || static_cast<size_t>(end - p) < n) { ok = false; return; }
    std::memcpy(dst, p, n);
    p += n;
  }
};

struct Step {
  uint8_t kind = 0;
  int rval = 0;
  uint64_t size = 0;
  struct timespec mtime = {0, 0};
  librados::bufferlist data;
  std::map<uint64_t, uint64_t> extents;
  std::map<std::string, librados::bufferlist> map;
  std::set<std::string> keys;
  std::string name;
  bool more = false;
};

void put_bl(Out& out, const librados::bufferlist& bl) {
  size_t at = out.bytes.size();
  out.bytes.resize(at + bl.length());
  auto it = bl.begin();
  it.copy(bl.length(), &out.bytes[at]);
}

void put_map(Out& out, const std::map<std::string, librados::bufferlist>& map) {
  out.u32(static_cast<uint32_t>(map.size()));
  for (const auto& kv : map) {
    out.str(kv.first);
    out.u32(kv.second.length());
    put_bl(out, kv.second);
  }
}
}  // namespace

namespace {

// One compound read: its steps, the librados operation writing into them, and where to
// report the result.
struct ReadJob {
  // Holds a reference to the I/O context until the read completes: librados' completion of a
  // read still uses it, and the caller may close its handle while the read is in flight.
  librados::IoCtx ctx;
  std::vector<Step> steps;
  librados::ObjectReadOperation op;
  librados::AioCompletion* completion = nullptr;
  rbdx_read_done done = nullptr;
  void* arg = nullptr;
  Out out;

  // A reference to read data, made contiguous (librados usually receives it that way).
  void put_ref(librados::bufferlist& bl) {
    out.u64(bl.length());
    out.u64(bl.length() ? reinterpret_cast<uint64_t>(bl.c_str()) : 0);
  }

  int parse(const char* in_buf, size_t in_len) {
    In in{in_buf, in_buf + in_len};
    uint32_t n = in.u32();
    if (!in.ok || n > in_len) return -EINVAL;
    steps.resize(n);
    for (uint32_t i = 0; i < n && in.ok; i++) {
      Step& s = steps[i];
      s.kind = in.u8();
      switch (s.kind) {
        case 1: op.stat2(&s.size, &s.mtime, &s.rval); break;
        case 2: { uint64_t off = in.u64(); uint64_t len = in.u64(); op.read(off, len, &s.data, &s.rval); break; }
        case 3: { uint64_t off = in.u64(); uint64_t len = in.u64(); op.sparse_read(off, len, &s.extents, &s.data, &s.rval); break; }
        case 4: {
          std::string after = in.str(); std::string prefix = in.str(); uint64_t max = in.u64();
          op.omap_get_vals2(after, prefix, max, &s.map, &s.more, &s.rval);
          break;
        }
        case 5: {
          uint32_t k = in.u32();
          for (uint32_t j = 0; j < k && in.ok; j++) s.keys.insert(in.str());
          op.omap_get_vals_by_keys(s.keys, &s.map, &s.rval);
          break;
        }
        case 6: s.name = in.str(); op.getxattr(s.name.c_str(), &s.data, &s.rval); break;
        case 7: op.getxattrs(&s.map, &s.rval); break;
        default: return -EINVAL;
      }
    }
    return in.ok ? 0 : -EINVAL;
  }

  // Encodes the outputs of a finished operation into `out`, or finds the step at fault.
  int finish(int r, uint64_t version, int* failed_step) {
    *failed_step = -1;
    // When the whole operation fails (e.g. the object is absent), the steps that did not run
    // may report decoding errors of their empty outputs; the step at fault carries `r` itself.
    if (r < 0) {
      for (size_t i = 0; i < steps.size(); i++) {
        if (steps[i].rval == r) { *failed_step = static_cast<int>(i); break; }
      }
      return r;
    }
    for (size_t i = 0; i < steps.size(); i++) {
      if (steps[i].rval < 0) { *failed_step = static_cast<int>(i); return steps[i].rval; }
    }
    out.u64(version);
    for (Step& s : steps) {
      switch (s.kind) {
        case 1:
          out.u64(s.size);
          out.u64(static_cast<uint64_t>(s.mtime.tv_sec));
          out.u32(static_cast<uint32_t>(s.mtime.tv_nsec));
          break;
        case 2: put_ref(s.data); break;
        case 3:
          out.u32(static_cast<uint32_t>(s.extents.size()));
          for (const auto& e : s.extents) { out.u64(e.first); out.u64(e.second); }
          put_ref(s.data);
          break;
        case 4: out.bytes.push_back(s.more ? 1 : 0); put_map(out, s.map); break;
        case 5: put_map(out, s.map); break;
        case 6: out.u32(s.data.length()); put_bl(out, s.data); break;
        case 7: put_map(out, s.map); break;
      }
    }
    return 0;
  }
};

// Runs on a librados thread when a read finishes: reports it and hands the job (which owns
// the outputs) to the receiver, or frees it on failure.
void on_read_complete(librados::completion_t, void* p) {
  ReadJob* job = static_cast<ReadJob*>(p);
  int failed = -1;
  int r;
  try {
    r = job->finish(job->completion->get_return_value(), job->completion->get_version64(),
                    &failed);
  } catch (...) {
    r = -ENOMEM;
  }
  job->completion->release();
  job->completion = nullptr;
  job->ctx.close();
  if (r < 0) {
    job->done(job->arg, r, failed, nullptr, 0, nullptr);
    delete job;
  } else {
    job->done(job->arg, 0, -1, job->out.bytes.data(), job->out.bytes.size(), job);
  }
}

}  // namespace

extern "C" {

void rbdx_read_release(void* job) { delete static_cast<ReadJob*>(job); }

int rbdx_aio_read_op(rados_ioctx_t io, const char* oid, const char* in_buf, size_t in_len,
                     rbdx_read_done done, void* arg) {
  ReadJob* job = nullptr;
  try {
    job = new ReadJob();
    int r = job->parse(in_buf, in_len);
    if (r < 0) { delete job; return r; }
    job->done = done;
    job->arg = arg;
    job->completion = librados::Rados::aio_create_completion(job, on_read_complete);
    librados::IoCtx::from_rados_ioctx_t(io, job->ctx);
    r = job->ctx.aio_operate(oid, job->completion, &job->op, nullptr);
    if (r < 0) {
      job->completion->release();
      delete job;
    }
    return r;
  } catch (...) {
    return -ENOMEM;
  }
}

// The snapshot set of an object.
// Layout: u64 seq, u32 n, n * (u64 cloneid, u64 size, u32 nsnaps, nsnaps * u64,
//         u32 noverlap, noverlap * (u64 offset, u64 length)). cloneid -2 is the head.
int rbdx_list_snaps(rados_ioctx_t io, const char* oid, char** buf, size_t* out_len) {
  librados::IoCtx ctx;
  librados::IoCtx::from_rados_ioctx_t(io, ctx);
  ctx.snap_set_read(LIBRADOS_SNAP_DIR);
  librados::ObjectReadOperation op;
  librados::snap_set_t set;
  int rval = 0;
  op.list_snaps(&set, &rval);
  int r = ctx.operate(oid, &op, nullptr);
  ctx.snap_set_read(LIBRADOS_SNAP_HEAD);
  if (r < 0) return r;
  if (rval < 0) return rval;
  Out out;
  out.u64(set.seq);
  out.u32(static_cast<uint32_t>(set.clones.size()));
  for (const auto& c : set.clones) {
    out.u64(c.cloneid);
    out.u64(c.size);
    out.u32(static_cast<uint32_t>(c.snaps.size()));
    for (auto s : c.snaps) out.u64(s);
    out.u32(static_cast<uint32_t>(c.overlap.size()));
    for (const auto& o : c.overlap) {
      out.u64(o.first);
      out.u64(o.second);
    }
  }
  return out.finish(buf, out_len);
}

// The watchers of an object.
// Layout: u32 n, n * (u64 watcher id, u64 cookie, u32 timeout, str address).
int rbdx_list_watchers(rados_ioctx_t io, const char* oid, char** buf, size_t* out_len) {
  librados::IoCtx ctx;
  librados::IoCtx::from_rados_ioctx_t(io, ctx);
  std::list<obj_watch_t> watchers;
  int r = ctx.list_watchers(oid, &watchers);
  if (r < 0) return r;
  Out out;
  out.u32(static_cast<uint32_t>(watchers.size()));
  for (const auto& w : watchers) {
    out.u64(static_cast<uint64_t>(w.watcher_id));
    out.u64(w.cookie);
    out.u32(w.timeout_seconds);
    out.str(std::string(w.addr, strnlen(w.addr, sizeof(w.addr))));
  }
  return out.finish(buf, out_len);
}

// One page of object names of the io context's namespace, from a cursor (empty: the start).
// Layout: str next cursor (empty at the end), u32 n, n * str name.
int rbdx_object_list(rados_ioctx_t io, const char* cursor, size_t max, char** buf,
                     size_t* out_len) {
  librados::IoCtx ctx;
  librados::IoCtx::from_rados_ioctx_t(io, ctx);
  librados::ObjectCursor start = ctx.object_list_begin();
  if (cursor != nullptr && cursor[0] != '\0' && !start.from_str(cursor)) return -EINVAL;
  librados::ObjectCursor finish = ctx.object_list_end();
  std::vector<librados::ObjectItem> items;
  librados::ObjectCursor next;
  int r = ctx.object_list(start, finish, max, {}, &items, &next);
  if (r < 0) return r;
  Out out;
  out.str(ctx.object_list_is_end(next) ? std::string() : next.to_str());
  out.u32(static_cast<uint32_t>(items.size()));
  for (const auto& item : items) out.str(item.oid);
  return out.finish(buf, out_len);
}

}  // extern "C"
