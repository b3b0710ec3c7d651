"""Builds the oneDNN FFI handlers (cnn_cases/kernels/*.cc) with the package, as one library.

Headers come from the build requirements: XLA's FFI API from jaxlib, oneDNN's from
onednn-devel-cpu-gomp. Without a C++ compiler or oneDNN the build is skipped with a
warning and the models run on XLA's kernels.
"""

import glob
import importlib.metadata
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _onednn_dirs():
    """(include dir, lib dir) of the oneDNN wheels in the build environment, or None."""
    include = lib = None
    for dist in ("onednn-devel-cpu-gomp", "onednn-cpu-gomp"):
        try:
            files = importlib.metadata.distribution(dist).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in files:
            path = str(f.locate())
            if path.endswith(os.path.join("oneapi", "dnnl", "dnnl.hpp")):
                include = os.path.dirname(os.path.dirname(os.path.dirname(path)))
            if f.name == "libdnnl.so":
                lib = os.path.dirname(path)
    return (include, lib) if include and lib else None


class BuildOneDNN(build_ext):
    def build_extensions(self):
        dirs = _onednn_dirs()
        if dirs is None:
            print("warning: onednn-devel-cpu-gomp not found; the oneDNN kernels are not built")
            self.extensions = []
            return
        import jaxlib

        for ext in self.extensions:
            ext.include_dirs += [os.path.join(os.path.dirname(jaxlib.__file__), "include"), dirs[0]]
            ext.library_dirs += [dirs[1]]
        super().build_extensions()


_KERNELS = "cnn_cases/kernels"

setup(
    ext_modules=[
        Extension(
            "cnn_cases.kernels._onednn",
            sources=sorted(glob.glob(f"{_KERNELS}/*.cc")),
            depends=sorted(glob.glob(f"{_KERNELS}/*.h")),
            libraries=["dnnl"],
            language="c++",
            extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildOneDNN},
)
