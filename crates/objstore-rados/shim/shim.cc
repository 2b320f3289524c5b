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

// A compound read, run as one librados operation so that every output reflects one version.
// Input: u32 n, n steps, each a u8 kind then its fields:
//   1 stat | 2 read: u64 off, u64 len (0: to the end) | 3 sparse read: u64 off, u64 len
//   4 omap vals: str start_after, str prefix, u64 max | 5 omap by keys: u32 n, n * str
//   6 getxattr: str name | 7 getxattrs
// Output: u64 version, then per step:
//   stat: u64 size, i64 sec, u32 nsec | read: u64 len, bytes | sparse: u32 n, n * (u64 off,
//   u64 len), u64 len, bytes | omap vals: u8 more, u32 n, n * (str key, str value) |
//   by keys: u32 n, n * (str, str) | getxattr: str value | getxattrs: u32 n, n * (str, str)
// On failure returns a negative errno and sets *failed_step to the step at fault (-1: none).
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

int rbdx_read_op(rados_ioctx_t io, const char* oid, const char* in_buf, size_t in_len,
                 char** buf, size_t* out_len, int* failed_step) {
  *failed_step = -1;
  librados::IoCtx ctx;
  librados::IoCtx::from_rados_ioctx_t(io, ctx);
  In in{in_buf, in_buf + in_len};
  uint32_t n = in.u32();
  std::vector<Step> steps(n);
  librados::ObjectReadOperation op;
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
  if (!in.ok) return -EINVAL;
  int r = ctx.operate(oid, &op, nullptr);
  // When the whole operation fails (e.g. the object is absent), the steps that did not run
  // may report decoding errors of their empty outputs; the step at fault carries `r` itself.
  if (r < 0) {
    for (uint32_t i = 0; i < n; i++) {
      if (steps[i].rval == r) { *failed_step = static_cast<int>(i); break; }
    }
    return r;
  }
  for (uint32_t i = 0; i < n; i++) {
    if (steps[i].rval < 0) { *failed_step = static_cast<int>(i); return steps[i].rval; }
  }
  Out out;
  out.u64(ctx.get_last_version());
  for (const Step& s : steps) {
    switch (s.kind) {
      case 1:
        out.u64(s.size);
        out.u64(static_cast<uint64_t>(s.mtime.tv_sec));
        out.u32(static_cast<uint32_t>(s.mtime.tv_nsec));
        break;
      case 2: out.u64(s.data.length()); put_bl(out, s.data); break;
      case 3:
        out.u32(static_cast<uint32_t>(s.extents.size()));
        for (const auto& e : s.extents) { out.u64(e.first); out.u64(e.second); }
        out.u64(s.data.length());
        put_bl(out, s.data);
        break;
      case 4: out.bytes.push_back(s.more ? 1 : 0); put_map(out, s.map); break;
      case 5: put_map(out, s.map); break;
      case 6: out.u32(s.data.length()); put_bl(out, s.data); break;
      case 7: put_map(out, s.map); break;
    }
  }
  return out.finish(buf, out_len);
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
