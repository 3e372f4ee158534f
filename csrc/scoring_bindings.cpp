// pybind11 bindings of the fused scoring: the CPU twin over buffers (numpy views of torch CPU tensors)
// and the CUDA launch over raw device pointers on a caller-given stream.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "scoring.h"

namespace py = pybind11;

namespace spice::scoring {

namespace {

// A C-contiguous buffer with the expected item size and shape; `name` appears in every error.
template <typename T>
T* checked(const py::buffer& buf, const char* name, std::vector<int64_t> shape, bool writable) {
  py::buffer_info info = buf.request(writable);
  if (info.itemsize != static_cast<py::ssize_t>(sizeof(T))) {
    throw py::value_error(std::string(name) + ": expected items of " + std::to_string(sizeof(T)) + " bytes, got " +
                          std::to_string(info.itemsize) + " (format " + info.format + ")");
  }
  if (info.ndim != static_cast<py::ssize_t>(shape.size())) {
    throw py::value_error(std::string(name) + ": expected " + std::to_string(shape.size()) + " dimensions, got " +
                          std::to_string(info.ndim));
  }
  py::ssize_t stride = sizeof(T);
  for (size_t d = shape.size(); d-- > 0;) {
    if (info.shape[d] != shape[d]) {
      throw py::value_error(std::string(name) + ": dimension " + std::to_string(d) + " is " +
                            std::to_string(info.shape[d]) + ", expected " + std::to_string(shape[d]));
    }
    if (info.shape[d] > 1 && info.strides[d] != stride) {
      throw py::value_error(std::string(name) + ": must be C-contiguous");
    }
    stride *= info.shape[d];
  }
  return static_cast<T*>(info.ptr);
}

ScoreParams make_params(int64_t tasks, int64_t group, int64_t sequences, int64_t tokens, int64_t groups,
                        const std::vector<float>& table, float invalid_penalty, bool std_normalize, float eps) {
  if (tasks < 0 || group < 0 || sequences < 0 || tokens < 0 || groups < 0) {
    throw py::value_error("score_iteration: negative shape");
  }
  if (tasks > INT32_MAX) throw py::value_error("score_iteration: T=" + std::to_string(tasks) + " exceeds 2^31-1");
  if (groups > tasks) {
    throw py::value_error("score_iteration: " + std::to_string(groups) + " challenger groups for " +
                          std::to_string(tasks) + " tasks");
  }
  if (tasks > 0 && (group < 1 || group > kMaxGroupSize)) {
    throw py::value_error("score_iteration: group size G=" + std::to_string(group) + " must be in [1, " +
                          std::to_string(kMaxGroupSize) + "]");
  }
  if (static_cast<int64_t>(table.size()) != group + 1) {
    throw py::value_error("score_iteration: challenger_table has " + std::to_string(table.size()) +
                          " entries, expected G+1=" + std::to_string(group + 1));
  }
  ScoreParams p;
  p.tasks = tasks;
  p.group_size = group;
  p.sequences = sequences;
  p.tokens = tokens;
  p.groups = groups;
  p.invalid_penalty = invalid_penalty;
  p.std_normalize = std_normalize ? 1 : 0;
  p.eps = eps;
  for (size_t c = 0; c < table.size(); ++c) p.challenger_table[c] = table[c];
  return p;
}

void score_cpu_py(const py::buffer& verdicts, const py::buffer& task_valid, const py::buffer& group_index,
                  const py::buffer& group_members, const py::buffer& group_offsets, const py::buffer& sequence_source, const py::buffer& loss_mask, const std::vector<float>& table,
                  const py::buffer& reasoner_rewards, const py::buffer& challenger_rewards,
                  const py::buffer& reasoner_advantages, const py::buffer& challenger_advantages,
                  const py::buffer& token_advantages, float invalid_penalty, bool std_normalize, float eps) {
  py::buffer_info v = verdicts.request(), m = loss_mask.request(), o = group_offsets.request();
  if (v.ndim != 2 || m.ndim != 2) throw py::value_error("score_iteration: verdicts and loss_mask must be 2-D");
  if (o.ndim != 1 || o.shape[0] < 1) throw py::value_error("score_iteration: group_offsets must be [groups + 1]");
  const int64_t T = v.shape[0], G = v.shape[1], S = m.shape[0], L = m.shape[1], groups = o.shape[0] - 1;
  ScoreParams p = make_params(T, G, S, L, groups, table, invalid_penalty, std_normalize, eps);
  p.verdicts = checked<int8_t>(verdicts, "verdicts", {T, G}, false);
  p.task_valid = checked<uint8_t>(task_valid, "task_valid", {T}, false);
  p.group_index = checked<int32_t>(group_index, "group_index", {T}, false);
  p.group_members = checked<int32_t>(group_members, "group_members", {T}, false);
  p.group_offsets = checked<int32_t>(group_offsets, "group_offsets", {groups + 1}, false);
  p.sequence_source = checked<int64_t>(sequence_source, "sequence_source", {S}, false);
  p.loss_mask = checked<float>(loss_mask, "loss_mask", {S, L}, false);
  p.reasoner_rewards = checked<float>(reasoner_rewards, "reasoner_rewards", {T, G}, true);
  p.challenger_rewards = checked<float>(challenger_rewards, "challenger_rewards", {T}, true);
  p.reasoner_advantages = checked<float>(reasoner_advantages, "reasoner_advantages", {T, G}, true);
  p.challenger_advantages = checked<float>(challenger_advantages, "challenger_advantages", {T}, true);
  p.token_advantages = checked<float>(token_advantages, "token_advantages", {S, L}, true);
  py::gil_scoped_release release;
  score_cpu(p);
}

void score_cuda_py(uintptr_t verdicts, uintptr_t task_valid, uintptr_t group_index, uintptr_t group_members,
                   uintptr_t group_offsets, uintptr_t sequence_source, uintptr_t loss_mask,
                   uintptr_t reasoner_rewards, uintptr_t challenger_rewards, uintptr_t reasoner_advantages,
                   uintptr_t challenger_advantages, uintptr_t token_advantages, uintptr_t counts,
                   uintptr_t group_mean, uintptr_t group_denominator, int64_t tasks, int64_t group,
                   int64_t sequences, int64_t tokens, int64_t groups, const std::vector<float>& table,
                   float invalid_penalty, bool std_normalize, float eps, int device, uintptr_t stream) {
#ifdef SPICE_WITH_CUDA
  ScoreParams p = make_params(tasks, group, sequences, tokens, groups, table, invalid_penalty, std_normalize, eps);
  p.verdicts = reinterpret_cast<const int8_t*>(verdicts);
  p.task_valid = reinterpret_cast<const uint8_t*>(task_valid);
  p.group_index = reinterpret_cast<const int32_t*>(group_index);
  p.group_members = reinterpret_cast<const int32_t*>(group_members);
  p.group_offsets = reinterpret_cast<const int32_t*>(group_offsets);
  p.sequence_source = reinterpret_cast<const int64_t*>(sequence_source);
  p.loss_mask = reinterpret_cast<const float*>(loss_mask);
  p.reasoner_rewards = reinterpret_cast<float*>(reasoner_rewards);
  p.challenger_rewards = reinterpret_cast<float*>(challenger_rewards);
  p.reasoner_advantages = reinterpret_cast<float*>(reasoner_advantages);
  p.challenger_advantages = reinterpret_cast<float*>(challenger_advantages);
  p.token_advantages = reinterpret_cast<float*>(token_advantages);
  p.counts = reinterpret_cast<int32_t*>(counts);
  p.group_mean = reinterpret_cast<float*>(group_mean);
  p.group_denominator = reinterpret_cast<float*>(group_denominator);
  const char* err = score_cuda(p, device, stream);
  if (err != nullptr) throw std::runtime_error(std::string("score_iteration (CUDA): ") + err);
#else
  (void)verdicts, (void)task_valid, (void)group_index, (void)group_members, (void)group_offsets;
  (void)sequence_source, (void)loss_mask, (void)reasoner_rewards, (void)challenger_rewards;
  (void)reasoner_advantages, (void)challenger_advantages, (void)token_advantages, (void)counts, (void)group_mean;
  (void)group_denominator, (void)tasks, (void)group, (void)sequences, (void)tokens, (void)groups, (void)table;
  (void)invalid_penalty, (void)std_normalize, (void)eps, (void)device, (void)stream;
  throw std::runtime_error("score_iteration (CUDA): spice._C was built without CUDA");
#endif
}

}  // namespace

void register_bindings(py::module_& m) {
  m.attr("SCORING_MAX_GROUP_SIZE") = kMaxGroupSize;
  m.def("score_iteration_cpu", &score_cpu_py, py::arg("verdicts"), py::arg("task_valid"), py::arg("group_index"),
        py::arg("group_members"), py::arg("group_offsets"), py::arg("sequence_source"), py::arg("loss_mask"), py::arg("challenger_table"), py::arg("reasoner_rewards"),
        py::arg("challenger_rewards"), py::arg("reasoner_advantages"), py::arg("challenger_advantages"),
        py::arg("token_advantages"), py::arg("invalid_penalty"), py::arg("std_normalize"), py::arg("eps"),
        "CPU twin of the fused scoring kernel; writes the five output buffers in place.");
  m.def("score_iteration_cuda", &score_cuda_py, py::arg("verdicts"), py::arg("task_valid"), py::arg("group_index"),
        py::arg("group_members"), py::arg("group_offsets"), py::arg("sequence_source"), py::arg("loss_mask"),
        py::arg("reasoner_rewards"), py::arg("challenger_rewards"), py::arg("reasoner_advantages"),
        py::arg("challenger_advantages"), py::arg("token_advantages"), py::arg("counts"), py::arg("group_mean"),
        py::arg("group_denominator"), py::arg("tasks"), py::arg("group_size"), py::arg("sequences"),
        py::arg("tokens"), py::arg("groups"), py::arg("challenger_table"), py::arg("invalid_penalty"),
        py::arg("std_normalize"), py::arg("eps"), py::arg("device"), py::arg("stream"),
        "Launch the fused scoring kernels on device pointers (tensor.data_ptr()) of one GPU on the given stream.");
}

}  // namespace spice::scoring
