// dist_work.cc — the registry of distributed entry points and the communication thread (dist_api.h).
//
// The thread starts on the first job and is detached: a process that gives up on a hung collective
// (a timeout) must still be able to exit while the thread sits inside the library. Finished jobs leave
// their error text (empty when fine) in `results` until someone waits on them.
#include <dlfcn.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "dist_api.h"

namespace llava {

namespace {
std::map<std::string, DistFn>& registry() {
  static std::map<std::string, DistFn> r;
  return r;
}

struct Job {
  int64_t id;
  std::string what;
  std::function<void()> fn;
};

struct Worker {
  std::mutex mu;
  std::condition_variable cv_jobs, cv_done;
  std::deque<Job> jobs;
  std::map<int64_t, std::string> results;  // finished, not yet waited on: id -> error ("" = fine)
  std::map<int64_t, std::string> pending;  // queued or running: id -> what
  int64_t next_id = 1;
  bool started = false;

  void loop() {
    for (;;) {
      Job j;
      {
        std::unique_lock<std::mutex> lk(mu);
        cv_jobs.wait(lk, [&] { return !jobs.empty(); });
        j = std::move(jobs.front());
        jobs.pop_front();
      }
      std::string err;
      try {
        j.fn();
      } catch (const std::exception& e) {
        err = e.what();
        if (err.empty()) err = "failed";
      } catch (...) { err = "failed with an unknown exception"; }
      {
        std::lock_guard<std::mutex> lk(mu);
        pending.erase(j.id);
        results[j.id] = err.empty() || err[0] == '[' ? err : "[" + j.what + "] " + err;
      }
      cv_done.notify_all();
    }
  }
};

Worker& worker() {
  static Worker* w = new Worker();  // never destroyed: the detached thread may outlive main()
  return *w;
}
}  // namespace

void register_dist(const std::string& name, DistFn fn) { registry().emplace(name, std::move(fn)); }
const DistFn* find_dist(const std::string& name) {
  auto it = registry().find(name);
  return it == registry().end() ? nullptr : &it->second;
}
std::vector<std::string> dist_names() {
  std::vector<std::string> out;
  for (auto& kv : registry()) out.push_back(kv.first);
  return out;
}

int64_t dist_submit(const std::string& what, std::function<void()> job) {
  Worker& w = worker();
  int64_t id;
  {
    std::lock_guard<std::mutex> lk(w.mu);
    if (!w.started) {
      std::thread([&w] { w.loop(); }).detach();
      w.started = true;
    }
    id = w.next_id++;
    w.pending[id] = what;
    w.jobs.push_back(Job{id, what, std::move(job)});
  }
  w.cv_jobs.notify_one();
  return id;
}

bool dist_done(int64_t id) {
  Worker& w = worker();
  std::lock_guard<std::mutex> lk(w.mu);
  if (w.results.count(id)) return true;
  if (w.pending.count(id)) return false;
  throw KernelError("[dist_wait] unknown work id " + std::to_string(id) + " (already waited on?)");
}

void dist_wait(int64_t id, double timeout_s) {
  Worker& w = worker();
  std::unique_lock<std::mutex> lk(w.mu);
  if (!w.results.count(id) && !w.pending.count(id))
    throw KernelError("[dist_wait] unknown work id " + std::to_string(id) + " (already waited on?)");
  auto ready = [&] { return w.results.count(id) > 0; };
  if (timeout_s > 0) {
    auto dur = std::chrono::duration<double>(timeout_s);
    if (!w.cv_done.wait_for(lk, std::chrono::duration_cast<std::chrono::milliseconds>(dur), ready)) {
      std::string what = w.pending.count(id) ? w.pending[id] : "collective";
      throw KernelError("[" + what + "] no answer from the other ranks within " + std::to_string((int)timeout_s) +
                        " s: a rank died, hung or issued different collectives (timeout: LLAVA_DIST_TIMEOUT or "
                        "--dist-timeout)");
    }
  } else {
    w.cv_done.wait(lk, ready);
  }
  std::string err = std::move(w.results[id]);
  w.results.erase(id);
  if (!err.empty()) throw KernelError(err);
}

void dist_run(const std::string& what, std::function<void()> job, double timeout_s) {
  dist_wait(dist_submit(what, std::move(job)), timeout_s);
}

void* dist_dlopen(const std::vector<std::string>& candidates, std::string* tried) {
  for (const auto& c : candidates) {
    if (c.empty()) continue;
    // RTLD_GLOBAL: Open MPI loads its own plugins (mca_*.so) which resolve symbols of libmpi globally.
    void* h = dlopen(c.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (h) return h;
    const char* e = dlerror();
    if (tried) *tried += "\n  " + c + ": " + (e ? e : "not found");
  }
  return nullptr;
}

void* dist_sym(void* lib, const char* name, const char* libname) {
  void* p = dlsym(lib, name);
  if (!p)
    throw KernelError(std::string("[dist] ") + libname + " has no symbol " + name + " (an incompatible version?)");
  return p;
}

// dist_wait(id, timeout_s) -> 0; dist_done(id) -> 1 when finished.
REGISTER_DIST("dist_wait", [](const KernelArgs& a) {
  dist_wait(a.int_(0), a.num(1));
  return 0.0;
});
REGISTER_DIST("dist_done", [](const KernelArgs& a) { return dist_done(a.int_(0)) ? 1.0 : 0.0; });

}  // namespace llava
