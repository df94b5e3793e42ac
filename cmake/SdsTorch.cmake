# LibTorch, taken from the torch wheel in the project's .venv (or the Python given by
# -DSDS_PYTHON, e.g. the GPU machine's own torch), as an imported target `sds::torch`.
#
# Why not find_package(Torch)? The PyPI wheel is built with CUDA, and its TorchConfig then
# insists on a CUDA toolkit (see README, "Build"):
#  - with no toolkit (a fresh Debian machine) it stops: "Your installed Caffe2 version uses
#    CUDA but I cannot find the CUDA libraries";
#  - with a toolkit but no TORCH_CUDA_ARCH_LIST it compiles a CUDA probe for the installed GPUs,
#    which fails under CMake 3.25 with C++20 ("CUDA20" dialect unknown); with
#    -DTORCH_CUDA_ARCH_LIST=9.0 -DCMAKE_CUDA_STANDARD=17 it configures and links the
#    toolkit's libnvrtc beside the wheel's CUDA libraries.
# We compile no CUDA code ourselves, so we link the wheel's own libraries directly: the same
# build works with and without a toolkit, GPU or driver. libtorch_cuda is linked (no-as-needed,
# so its kernels register) when the wheel has it; it finds its CUDA runtime through its own
# RPATH into the nvidia-* wheels and reports no device when there is no GPU.
set(SDS_PYTHON "${CMAKE_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH "Python with torch")
execute_process(
    COMMAND "${SDS_PYTHON}" -c
            "import os, torch; print(os.path.dirname(torch.__file__)); print(torch.__version__); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))"
    OUTPUT_VARIABLE _sds_torch OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _sds_rc)
if(NOT _sds_rc EQUAL 0)
    message(FATAL_ERROR "Could not import torch with ${SDS_PYTHON}. Run scripts/setup.sh first, "
                        "or pass -DSDS_PYTHON=/path/to/python-with-torch.")
endif()
string(REPLACE "\n" ";" _sds_torch "${_sds_torch}")
list(GET _sds_torch 0 SDS_TORCH_DIR)
list(GET _sds_torch 1 SDS_TORCH_VERSION)
list(GET _sds_torch 2 _sds_cxx11_abi)

add_library(sds_torch INTERFACE)
add_library(sds::torch ALIAS sds_torch)
target_include_directories(sds_torch SYSTEM INTERFACE
    "${SDS_TORCH_DIR}/include" "${SDS_TORCH_DIR}/include/torch/csrc/api/include")
target_compile_definitions(sds_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_sds_cxx11_abi})
set(_sds_libs "${SDS_TORCH_DIR}/lib/libtorch.so" "${SDS_TORCH_DIR}/lib/libtorch_cpu.so"
              "${SDS_TORCH_DIR}/lib/libc10.so")
set(SDS_TORCH_CUDA OFF)
if(EXISTS "${SDS_TORCH_DIR}/lib/libtorch_cuda.so")
    set(SDS_TORCH_CUDA ON)
    list(APPEND _sds_libs "-Wl,--no-as-needed" "${SDS_TORCH_DIR}/lib/libtorch_cuda.so"
                          "${SDS_TORCH_DIR}/lib/libc10_cuda.so" "-Wl,--as-needed")
    # Let the linker find libtorch_cuda's own dependencies (libcudart, cuBLAS, ... from the
    # nvidia-* wheels) the way the loader will, through the library's RUNPATH.
    target_link_options(sds_torch INTERFACE "LINKER:--allow-shlib-undefined")
endif()
# libtorch.so and libtorch_cpu.so export their own copies of some std::filesystem functions;
# libtorch's remove_all crashes when our code calls it. The loader binds our calls to the first
# library in the executable's needed list that defines them, so libstdc++ must come first there.
# Naming it by full path, not-as-needed, before everything else does that on Debian and on
# Ubuntu (whose linker drops "-lstdc++" when libtorch already defines every symbol we use).
foreach(_name libstdc++.so libstdc++.so.6)
    execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=${_name}
                    OUTPUT_VARIABLE _sds_libstdcxx OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(IS_ABSOLUTE "${_sds_libstdcxx}" AND EXISTS "${_sds_libstdcxx}")
        break()
    endif()
endforeach()
if(NOT IS_ABSOLUTE "${_sds_libstdcxx}")
    set(_sds_libstdcxx "-lstdc++")  # a compiler that does not say where its library is
endif()
target_link_options(sds_torch INTERFACE
    "SHELL:-Wl,--push-state,--no-as-needed ${_sds_libstdcxx} -Wl,--pop-state")
target_link_libraries(sds_torch INTERFACE ${_sds_libs} pthread)
message(STATUS "LibTorch ${SDS_TORCH_VERSION} from ${SDS_TORCH_DIR} (CUDA kernels: ${SDS_TORCH_CUDA})")
