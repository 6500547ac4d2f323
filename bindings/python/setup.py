"""Builds libcortex.so (scripts/build_lib.sh: release, static Swift stdlib) and bundles
it in the package, so an installed cortex_swift needs no Swift toolchain or runtime.
Set CORTEX_LIBRARY=/path/libcortex.so to bundle an existing build instead (the same
variable tells an installed cortex_swift which library to load). The version is
cortex.h's CX_VERSION, the project's one version source."""
import os
import re
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib = os.environ.get("CORTEX_LIBRARY")
        if not lib:
            script = os.path.join(ROOT, "scripts", "build_lib.sh")
            if not os.path.exists(script):
                raise RuntimeError("cortex_swift: build from the Cortex repository (bindings/python) "
                                   "or set CORTEX_LIBRARY to a libcortex.so")
            lib = subprocess.check_output([script], text=True).strip().splitlines()[-1]
        dest = os.path.join(self.build_lib, "cortex_swift", "libcortex.so")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(lib, dest)


class BinaryDistribution(Distribution):
    """The wheel carries a native library: platform-specific."""

    def has_ext_modules(self):
        return True


def version():
    """CX_VERSION of include/cortex.h: the package is built from the Cortex repository."""
    header = os.path.join(ROOT, "include", "cortex.h")
    if not os.path.exists(header):
        raise RuntimeError("cortex_swift: build from the Cortex repository (bindings/python): include/cortex.h "
                           "holds the version")
    return re.search(r'#define CX_VERSION "([^"]+)"', open(header).read()).group(1)


setup(version=version(), distclass=BinaryDistribution, cmdclass={"build_py": BuildWithLibrary})
