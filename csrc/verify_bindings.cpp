// pybind11 bindings of the verification fast path (registered into spice._C by module.cpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "verify.h"

namespace py = pybind11;

namespace spice::verify {

namespace {

// bytes as they are; str as UTF-8 with lone surrogates passed through, so no string can fail here.
std::string to_bytes(const py::handle& obj, const char* what, size_t index) {
  if (PyBytes_Check(obj.ptr())) return std::string(PyBytes_AS_STRING(obj.ptr()), PyBytes_GET_SIZE(obj.ptr()));
  if (PyUnicode_Check(obj.ptr())) {
    Py_ssize_t size = 0;
    if (const char* utf8 = PyUnicode_AsUTF8AndSize(obj.ptr(), &size)) return std::string(utf8, size);
    PyErr_Clear();  // lone surrogates: encode them as they are
    PyObject* encoded = PyUnicode_AsEncodedString(obj.ptr(), "utf-8", "surrogatepass");
    if (encoded == nullptr) throw py::error_already_set();
    std::string out(PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded));
    Py_DECREF(encoded);
    return out;
  }
  throw py::type_error(std::string(what) + "[" + std::to_string(index) + "] must be str or bytes, got " +
                       std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
}

std::vector<std::string> to_byte_list(const py::sequence& items, const char* what) {
  std::vector<std::string> out;
  out.reserve(py::len(items));
  for (size_t i = 0; i < py::len(items); ++i) out.push_back(to_bytes(items[i], what, i));
  return out;
}

std::vector<Kind> to_kinds(const py::sequence& kinds) {
  std::vector<Kind> out;
  out.reserve(py::len(kinds));
  for (size_t i = 0; i < py::len(kinds); ++i) out.push_back(parse_kind(to_bytes(kinds[i], "kinds", i)));
  return out;
}

py::list verify_batch_py(const py::sequence& responses, const py::sequence& golds, const py::sequence& kinds,
                         int num_threads) {
  const size_t n = py::len(responses);
  if (py::len(golds) != n || py::len(kinds) != n) {
    throw py::value_error("verify_batch: responses, golds and kinds must have the same length (got " +
                          std::to_string(n) + ", " + std::to_string(py::len(golds)) + ", " +
                          std::to_string(py::len(kinds)) + ")");
  }
  std::vector<std::string> r = to_byte_list(responses, "responses"), g = to_byte_list(golds, "golds");
  std::vector<Kind> k = to_kinds(kinds);
  std::vector<int8_t> verdicts;
  {
    py::gil_scoped_release release;
    verdicts = verdict_batch(r, g, k, num_threads);
  }
  py::list out(n);
  for (size_t i = 0; i < n; ++i) out[i] = py::int_(static_cast<int>(verdicts[i]));
  return out;
}

py::list extract_answers_py(const py::sequence& responses, const py::sequence& kinds) {
  const size_t n = py::len(responses);
  if (py::len(kinds) != n) throw py::value_error("extract_answers: responses and kinds must have the same length");
  std::vector<std::string> r = to_byte_list(responses, "responses");
  std::vector<Kind> k = to_kinds(kinds);
  std::vector<std::optional<std::string>> answers(n);
  {
    py::gil_scoped_release release;
    for (size_t i = 0; i < n; ++i) answers[i] = extract_answer(r[i], k[i]);
  }
  py::list out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = answers[i] ? py::object(py::bytes(*answers[i])) : py::object(py::none());
  }
  return out;
}

py::tuple normalize_py(const py::object& text) {
  Normalized r = normalize_math(to_bytes(text, "text", 0));
  return py::make_tuple(py::bytes(r.text), r.percent, r.degree, py::bytes(string_canonical(r.text)));
}

}  // namespace

void register_bindings(py::module_& m) {
  m.attr("VERIFY_EQUIVALENT") = static_cast<int>(kEquivalent);
  m.attr("VERIFY_NOT_EQUIVALENT") = static_cast<int>(kNotEquivalent);
  m.attr("VERIFY_UNDECIDED") = static_cast<int>(kUndecided);
  m.attr("VERIFY_MAX_SCAN_BYTES") = kMaxScanBytes;
  m.attr("VERIFY_MAX_ANSWER_BYTES") = kMaxAnswerBytes;
  m.def("verify_batch", &verify_batch_py, py::arg("responses"), py::arg("golds"), py::arg("kinds"),
        py::arg("num_threads") = 0,
        "Fast-path verdicts (1 equivalent, 0 not equivalent, -1 undecided) for each (response, gold, kind); "
        "str or bytes; multi-threaded with the GIL released.");
  m.def("extract_answers", &extract_answers_py, py::arg("responses"), py::arg("kinds"),
        "The extracted final answer of each response as UTF-8 bytes, or None.");
  m.def("normalize", &normalize_py, py::arg("text"),
        "(normalised text, percent removed, degree removed, string canonical form) of one answer, as bytes.");
}

}  // namespace spice::verify
