"""A Beam filesystem with a scheme of its own, `mirror://`, kept in a local
folder: a path that is not a local path, as `gs://` is not, for testing that
nothing on the way takes a remote path for a local one (pathlib would turn
`mirror://a` into `mirror:/a`). Importing the module registers it (Beam finds
FileSystem subclasses by their scheme)."""

import os
import shutil

from apache_beam.io.filesystem import FileMetadata
from apache_beam.io.localfilesystem import LocalFileSystem

PREFIX = "mirror://"


def root() -> str:
    return os.environ["MIRROR_FILESYSTEM_ROOT"]


def local(path: str) -> str:
    assert path.startswith(PREFIX), path
    return os.path.join(root(), path[len(PREFIX):])


def remote(path: str) -> str:
    return PREFIX + os.path.relpath(path, root())


class MirrorFileSystem(LocalFileSystem):
    @classmethod
    def scheme(cls):
        return "mirror"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        return super().mkdirs(local(path))

    def _list(self, dir_or_prefix):
        base = local(dir_or_prefix)
        if not os.path.exists(base):
            return
        for folder, _, names in os.walk(base):
            for name in names:
                path = os.path.join(folder, name)
                yield FileMetadata(remote(path), os.path.getsize(path), os.path.getmtime(path))

    def create(self, path, *args, **kwargs):
        return super().create(local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(local(path), *args, **kwargs)

    def copy(self, sources, destinations):
        return super().copy([local(p) for p in sources], [local(p) for p in destinations])

    def rename(self, sources, destinations):
        return super().rename([local(p) for p in sources], [local(p) for p in destinations])

    def exists(self, path):
        return os.path.exists(local(path))

    def size(self, path):
        return os.path.getsize(local(path))

    def last_updated(self, path):
        return os.path.getmtime(local(path))

    def checksum(self, path):
        return str(self.size(path))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        for path in paths:
            found = local(path)
            if os.path.isdir(found):
                shutil.rmtree(found)
            else:
                os.remove(found)  # a missing path raises, as Beam's filesystems do
