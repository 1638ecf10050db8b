"""Build the chrysalis Python package (python/chrysalis) and its C extension.

The extension links libchrysalis statically: build_ext first runs `make` for the static library
(position-independent objects, the same flags as every other build) in $CHRYS_BUILD (default
build/pyext), so nothing has to be installed. `make python` builds it in place; `pip install
--no-build-isolation .` installs it (metadata in pyproject.toml).
"""
import os
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("CHRYS_BUILD", "build/pyext")
STATIC = os.path.join(HERE, BUILD, "libchrysalis.a")


class BuildWithLibrary(build_ext):
    def run(self):
        jobs = os.environ.get("CHRYS_JOBS", "2")
        subprocess.check_call(["make", "-s", f"-j{jobs}", "MODE=release", f"BUILD={BUILD}",
                               os.path.join(BUILD, "libchrysalis.a")], cwd=HERE)
        super().run()


ext = Extension(
    "chrysalis._chrysalis",
    # the extension, one file per type (python/chrysalis/_chrysalis.h lists them)
    sources=[f"python/chrysalis/{name}.c" for name in ("_chrysalis", "_index", "_merger", "_embedder",
                                                        "_dropin", "_dropin_arith", "_lock")],
    include_dirs=[os.path.join(HERE, "include")],
    extra_objects=[STATIC],
    libraries=["cjson", "dl", "m"],
    # -ffp-contract=off: the drop-in merger's arithmetic must round exactly as Python's does
    extra_compile_args=["-std=c11", "-D_GNU_SOURCE", "-O3", "-ffp-contract=off", "-Wall", "-Wextra",
                        "-Wno-missing-field-initializers", "-Wno-cast-function-type", "-pthread",
                        # the files share ext_* names; only PyInit__chrysalis is exported
                        "-fvisibility=hidden"],
    extra_link_args=["-pthread"],
    # the library too: without it an in-place build kept linking the old library after a
    # change to src/ (the extension looked up to date against its own sources)
    depends=["include/chrysalis.h", "python/chrysalis/_chrysalis.h", STATIC],
)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildWithLibrary},
)
