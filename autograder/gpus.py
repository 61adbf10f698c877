"""NVIDIA GPUs on this host: what a ``CUDA_VISIBLE_DEVICES`` value selects, and which device
nodes a sandboxed kernel needs for exactly that (standard library only: no torch, no NVML).

Numbering. ``nvidia-smi`` numbers GPUs in PCI bus order; CUDA numbers them fastest first
unless ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; and ``/dev/nvidiaN`` carries the driver's *minor*
number, which need not match either (``nvidia-smi -q`` "Minor Number",
``/proc/driver/nvidia/gpus/<bus>/information`` "Device Minor"). So the harness pins each
worker with a UUID (``GPU-...`` or ``MIG-...``, unambiguous whatever the order:
:func:`pinning_ids`), starts kernels with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
(:func:`kernel_environment`) and maps a value to device nodes through the minor numbers
(:func:`device_nodes`).

``CUDA_VISIBLE_DEVICES`` as CUDA reads it (and as ``torch.cuda._parse_visible_devices``
mirrors it): a comma-separated list of indices, or of ``GPU-<uuid>`` / ``MIG-<uuid>`` (a
unique prefix is enough, "GPU-" included), the kind set by the first entry; the first
invalid entry (a negative or non-numeric index, an index past the last GPU, an unknown or
ambiguous UUID, an entry of the other kind) ends the list; a device named twice empties it;
``""`` and ``-1`` select nothing. Indices here are PCI bus order (nvidia-smi's), which is
CUDA's under ``CUDA_DEVICE_ORDER=PCI_BUS_ID``.

MIG: a MIG device is usable through its parent's ``/dev/nvidia<minor>`` plus two capability
nodes, ``/dev/nvidia-caps/nvidia-cap<m>`` for its GPU instance (``gpu<minor>/gi<g>/access``) and
its compute instance (``gpu<minor>/gi<g>/ci<c>/access``), whose minors the driver lists in
``/proc/driver/nvidia-caps/mig-minors``. The ``config`` and ``monitor`` capabilities (creating
and watching instances) are never granted.
"""

from __future__ import annotations

import os
import re
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SMI_TIMEOUT = 30.0
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
"""Device nodes every CUDA process opens (those that exist are granted). ``nvidia-modeset``
(display) and ``nvidia-caps/nvidia-cap1``/``2`` (MIG config/monitor) are not needed for compute."""


@dataclass(frozen=True)
class MigDevice:
    """One MIG device (a compute instance inside a GPU instance) of a GPU in MIG mode."""

    uuid: str  # "MIG-..." (R470+ drivers) or the legacy "MIG-GPU-<uuid>/<gi>/<ci>"
    gpu_instance: int
    compute_instance: int


@dataclass(frozen=True)
class Gpu:
    """One physical GPU as ``nvidia-smi`` reports it."""

    index: int  # nvidia-smi's index: PCI bus order
    uuid: str  # "GPU-..."
    pci_bus_id: str  # "00000000:17:00.0", as nvidia-smi prints it
    minor: int  # the N of /dev/nvidiaN (-1 where unknown)
    mig: tuple[MigDevice, ...] = ()
    name: str = ""
    mig_mode: bool = False  # MIG enabled: CUDA runs only on its MIG devices

    def __str__(self) -> str:
        return f"GPU {self.index} ({self.name or 'NVIDIA GPU'}, {self.uuid}, bus {self.pci_bus_id})"


Run = Callable[..., "subprocess.CompletedProcess[str]"]


# ------------------------------------------------------------------------------ nvidia-smi
def _smi(run: Run, *args: str) -> str | None:
    try:
        done = run(["nvidia-smi", *args], capture_output=True, text=True, timeout=SMI_TIMEOUT)
    except (OSError, subprocess.SubprocessError, ValueError):  # missing, not executable, timed out
        return None
    if done.returncode != 0 or not isinstance(done.stdout, str):
        return None
    return done.stdout


def _int(text: str | None) -> int | None:
    try:
        return int(str(text).strip())
    except (TypeError, ValueError):
        return None


def _parse_query(text: str) -> list[tuple[int, str, str, str]]:
    """``--query-gpu=index,uuid,pci.bus_id,name --format=csv,noheader`` lines."""
    rows = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",", 3)]
        if len(parts) >= 3 and _int(parts[0]) is not None and parts[1].startswith("GPU-"):
            rows.append((int(parts[0]), parts[1], parts[2], parts[3] if len(parts) > 3 else ""))
    return rows


@dataclass
class _XmlGpu:
    minor: int | None
    mig_mode: bool
    mig: list[tuple[int, int, int, str]]  # (MIG device index, gi, ci, uuid or "")


def _parse_xml(text: str) -> dict[str, _XmlGpu]:
    """``nvidia-smi -q -x``: per GPU UUID its minor number, MIG mode and MIG devices."""
    try:
        root = ET.fromstring(text.strip())
    except ET.ParseError:
        return {}
    found = {}
    for gpu in root.iter("gpu"):
        uuid = (gpu.findtext("uuid") or "").strip()
        if not uuid:
            continue
        migs = []
        for dev in gpu.findall("./mig_devices/mig_device"):
            index, gi, ci = (_int(dev.findtext(t)) for t in ("index", "gpu_instance_id", "compute_instance_id"))
            if gi is not None and ci is not None:
                migs.append((index if index is not None else len(migs), gi, ci, (dev.findtext("uuid") or "").strip()))
        mode = (gpu.findtext("./mig_mode/current_mig") or "").strip().lower() == "enabled"
        found[uuid] = _XmlGpu(_int(gpu.findtext("minor_number")), mode or bool(migs), migs)
    return found


_LIST_GPU = re.compile(r"^GPU\s+(\d+):.*\(UUID:\s*(GPU-[^)\s]+)\)")
_LIST_MIG = re.compile(r"^MIG\s+.*?Device\s+(\d+):\s*\(UUID:\s*(MIG-[^)\s]+)\)")
_LEGACY_MIG = re.compile(r"^MIG-(GPU-[0-9A-Fa-f-]+)/(\d+)/(\d+)$")


def _parse_list(text: str) -> dict[str, dict[int, str]]:
    """``nvidia-smi -L``: per GPU UUID, MIG device index -> MIG UUID."""
    found: dict[str, dict[int, str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if m := _LIST_GPU.match(line):
            current = found.setdefault(m.group(2), {})
        elif (m := _LIST_MIG.match(line)) and current is not None:
            current[int(m.group(1))] = m.group(2)
    return found


def _proc_bus(bus_id: str) -> str:
    """nvidia-smi's ``00000000:17:00.0`` as the driver's /proc folder names it: ``0000:17:00.0``."""
    domain, _, rest = bus_id.strip().lower().partition(":")
    return f"{domain[-4:].rjust(4, '0')}:{rest}" if rest else bus_id.lower()


def proc_minor(bus_id: str, proc: Path = Path("/proc")) -> int | None:
    """"Device Minor" from ``/proc/driver/nvidia/gpus/<bus>/information``, if readable."""
    for name in dict.fromkeys((_proc_bus(bus_id), bus_id.lower(), bus_id)):
        try:
            text = (proc / "driver" / "nvidia" / "gpus" / name / "information").read_text()
        except OSError:
            continue
        if m := re.search(r"^Device Minor:\s*(\d+)", text, re.MULTILINE):
            return int(m.group(1))
    return None


def list_gpus(run: Run | None = None, proc: Path = Path("/proc")) -> list[Gpu]:
    """The NVIDIA GPUs ``nvidia-smi`` reports, in its (PCI bus) order; ``[]`` where nvidia-smi
    is missing, fails or times out.

    Index, UUID and bus from ``--query-gpu``; minor number and MIG devices from ``-q -x``
    (the minor falls back to ``/proc/driver/nvidia/gpus/<bus>/information``); MIG UUIDs from
    ``-L``. ``run`` stands in for :func:`subprocess.run` (its default; tests feed recorded outputs).
    """
    run = run or subprocess.run
    query = _smi(run, "--query-gpu=index,uuid,pci.bus_id,name", "--format=csv,noheader")
    if query is None:
        return []
    rows = _parse_query(query)
    if not rows:
        return []
    xml = _parse_xml(_smi(run, "-q", "-x") or "")
    listing = _parse_list(_smi(run, "-L") or "") if any(x.mig for x in xml.values()) else {}
    gpus = []
    for index, uuid, bus, name in sorted(rows):
        info = xml.get(uuid, _XmlGpu(None, False, []))
        minor = info.minor if info.minor is not None else proc_minor(bus, proc)
        migs = []
        for mig_index, gi, ci, mig_uuid in info.mig:
            mig_uuid = mig_uuid or listing.get(uuid, {}).get(mig_index, "")
            if mig_uuid:
                migs.append(MigDevice(mig_uuid, gi, ci))
        gpus.append(Gpu(index, uuid, bus, minor if minor is not None else -1, tuple(migs), name, info.mig_mode))
    return gpus


# -------------------------------------------------------------------- CUDA_VISIBLE_DEVICES
def _strtoul(text: str) -> int:
    """The leading integer of ``text`` (CUDA parses indices like strtoul: "1gpu" is 1), or -1."""
    m = re.match(r"[+-]?\d+", text)
    return int(m.group(0)) if m else -1


def _all_migs(gpus: Sequence[Gpu]) -> list[tuple[Gpu, MigDevice]]:
    return [(g, m) for g in gpus for m in g.mig]


def _match_uuid(entry: str, gpus: Sequence[Gpu]) -> Gpu | tuple[Gpu, MigDevice] | None:
    """The one device whose UUID starts with ``entry`` (CUDA accepts unique prefixes), else None."""
    key = entry.lower()
    if key.startswith("gpu-"):
        hits: list = [g for g in gpus if g.uuid.lower().startswith(key)]
    elif legacy := _LEGACY_MIG.match(entry):  # R450/R460 drivers: MIG-GPU-<uuid>/<gi>/<ci>
        gpu_uuid, gi, ci = legacy.group(1).lower(), int(legacy.group(2)), int(legacy.group(3))
        hits = [(g, m) for g, m in _all_migs(gpus) if g.uuid.lower() == gpu_uuid
                and (m.gpu_instance, m.compute_instance) == (gi, ci)]
    else:
        hits = [(g, m) for g, m in _all_migs(gpus) if m.uuid.lower().startswith(key)]
    return hits[0] if len(hits) == 1 else None


def resolve_visible(visible: str | None, gpus: Sequence[Gpu]) -> list[Gpu | tuple[Gpu, MigDevice]]:
    """The devices a CUDA process started with ``CUDA_VISIBLE_DEVICES=visible`` (and
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``) can use, in its order: a :class:`Gpu`, or ``(gpu,
    mig_device)`` for a MIG device. ``None`` (unset) means every GPU. See the module notes
    for the rules (first invalid entry ends the list, a duplicate empties it)."""
    if visible is None:
        return list(gpus)
    entries = [e.strip() for e in visible.split(",")]
    by_index = {g.index: g for g in gpus}
    kind = entries[0][:4].upper()
    chosen: list[Gpu | tuple[Gpu, MigDevice]] = []
    for entry in entries:
        if kind in ("GPU-", "MIG-"):
            device = _match_uuid(entry, gpus) if entry[:4].upper() == kind else None
        else:
            number = _strtoul(entry)
            device = by_index.get(number) if number >= 0 else None
        if device is None:
            break  # CUDA ignores everything from the first invalid entry on
        if device in chosen:
            return []  # a device named twice: CUDA sees none
        chosen.append(device)
    return chosen


def _mig_minors(proc: Path) -> dict[str, int]:
    """``/proc/driver/nvidia-caps/mig-minors``: capability name (``gpu0/gi1/ci0/access``) -> minor."""
    try:
        text = (proc / "driver" / "nvidia-caps" / "mig-minors").read_text()
    except OSError:
        return {}
    table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            table[parts[0]] = int(parts[1])
    return table


def device_nodes(visible: str | None, gpus: Sequence[Gpu] | None = None, dev: Path = Path("/dev"),
                 proc: Path = Path("/proc")) -> list[str]:
    """The device nodes a sandboxed kernel started with ``CUDA_VISIBLE_DEVICES=visible`` may see:
    the control nodes (:data:`CONTROL_NODES`) and ``nvidia<minor>`` of each selected GPU, plus,
    for MIG devices, their own GPU- and compute-instance capability nodes under
    ``nvidia-caps/`` (a whole GPU in MIG mode: those of all its MIG devices). Only nodes that
    exist under ``dev`` are listed. Nothing when the value selects nothing, and nothing when it
    is unset (``None``): a kernel gets a GPU only when the grader pinned one."""
    if visible is None or not visible.strip():
        return []
    if gpus is None:
        gpus = list_gpus(proc=proc)
    selected = resolve_visible(visible, gpus)
    if not selected:
        return []
    caps = _mig_minors(proc)
    nodes: list[Path] = [dev / name for name in CONTROL_NODES]
    for item in selected:
        gpu, migs = (item, item.mig if item.mig_mode else ()) if isinstance(item, Gpu) else (item[0], (item[1],))
        if gpu.minor < 0:
            continue  # minor unknown: granting a guess could hand over another GPU
        nodes.append(dev / f"nvidia{gpu.minor}")
        for mig in migs:
            for cap in (f"gpu{gpu.minor}/gi{mig.gpu_instance}/access",
                        f"gpu{gpu.minor}/gi{mig.gpu_instance}/ci{mig.compute_instance}/access"):
                if cap in caps:
                    nodes.append(dev / "nvidia-caps" / f"nvidia-cap{caps[cap]}")
    return [str(p) for p in dict.fromkeys(nodes) if p.exists()]


# --------------------------------------------------------------------------- pinning
def _ids(item: Gpu | tuple[Gpu, MigDevice]) -> list[str]:
    """The UUIDs to pin workers to for one device: a GPU in MIG mode means its MIG devices."""
    if isinstance(item, tuple):
        return [item[1].uuid]
    if item.mig_mode:
        return [m.uuid for m in item.mig]
    return [item.uuid]


def _names(gpus: Sequence[Gpu]) -> str:
    return "; ".join(str(g) for g in gpus) or "none"


def _check_host_order(host: str, gpus: Sequence[Gpu], environ: Mapping[str, str]) -> None:
    """Indices in the host's ``CUDA_VISIBLE_DEVICES`` count fastest-first unless
    ``CUDA_DEVICE_ORDER=PCI_BUS_ID``; that matches PCI order only on identical GPUs."""
    first = host.strip()[:4].upper()
    if first in ("GPU-", "MIG-") or host.strip() in ("", "-1"):
        return
    if environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST").strip().upper() == "PCI_BUS_ID":
        return
    if len({g.name for g in gpus}) > 1:
        raise ValueError(
            f"CUDA_VISIBLE_DEVICES={host} numbers GPUs fastest first here (CUDA_DEVICE_ORDER is not PCI_BUS_ID) "
            f"and this host's GPUs differ ({_names(gpus)}), so which GPUs it means is not known without CUDA: "
            "give their UUIDs (nvidia-smi -L) or set CUDA_DEVICE_ORDER=PCI_BUS_ID")


def _explicit(entry: str, gpus: Sequence[Gpu]) -> Gpu | tuple[Gpu, MigDevice]:
    if entry.isdigit():
        for g in gpus:
            if g.index == int(entry):
                return g
        raise ValueError(f"--gpus: there is no GPU {entry}; nvidia-smi lists {_names(gpus)}")
    if entry[:4].upper() in ("GPU-", "MIG-"):
        device = _match_uuid(entry, gpus)
        if device is None:
            raise ValueError(f"--gpus: {entry} is not the UUID (or a unique prefix) of a GPU or MIG device here; "
                             "nvidia-smi -L lists them")
        return device
    raise ValueError(f"--gpus takes auto, none, or nvidia-smi indices (0,1) or UUIDs (GPU-..., MIG-...); got {entry!r}")


def pinning_ids(requested: str = "auto", gpus: Sequence[Gpu] | None = None,
                environ: Mapping[str, str] = os.environ) -> list[str]:
    """What ``--gpus`` means for worker pinning: one ``GPU-<uuid>`` / ``MIG-<uuid>`` per device
    (unambiguous whatever order CUDA uses), in nvidia-smi's order.

    ``auto``: the devices of ``$CUDA_VISIBLE_DEVICES`` where set (the host's restriction),
    else every GPU nvidia-smi lists; a GPU in MIG mode stands for its MIG devices. ``none``
    (or ``cpu``, ``""``): no GPU. Else a comma-separated list of nvidia-smi indices (PCI bus
    order, as ``nvidia-smi -L`` prints them), ``GPU-``/``MIG-`` UUIDs or unique prefixes; they
    must exist and lie within ``$CUDA_VISIBLE_DEVICES`` where that is set. Raises
    :class:`ValueError` with the reason for anything else.
    """
    value = (requested or "").strip()
    if value.lower() in ("none", "cpu", ""):
        return []
    if gpus is None:
        gpus = list_gpus()
    host = environ.get("CUDA_VISIBLE_DEVICES")
    allowed = None
    if host is not None:
        _check_host_order(host, gpus, environ)
        allowed = resolve_visible(host, gpus)
    if value.lower() == "auto":
        return list(dict.fromkeys(i for item in (gpus if allowed is None else allowed) for i in _ids(item)))
    if not gpus:
        raise ValueError(f"--gpus {value}: nvidia-smi finds no NVIDIA GPU here")
    chosen: list[Gpu | tuple[Gpu, MigDevice]] = []
    for entry in (e.strip() for e in value.split(",")):
        device = _explicit(entry, gpus)
        if device in chosen:
            raise ValueError(f"--gpus {value}: {entry} names a device already listed")
        if allowed is not None and device not in allowed and not (isinstance(device, tuple) and device[0] in allowed):
            raise ValueError(f"--gpus {value}: {entry} is outside this process's CUDA_VISIBLE_DEVICES={host}")
        if isinstance(device, Gpu) and device.mig_mode and not device.mig:
            raise ValueError(f"--gpus {value}: {device} is in MIG mode and has no MIG devices to run on")
        chosen.append(device)
    return list(dict.fromkeys(i for item in chosen for i in _ids(item)))


def kernel_environment(pinned: str | None) -> dict[str, str]:
    """The variables a kernel pinned to ``pinned`` (a UUID from :func:`pinning_ids`, or None
    for CPU) starts with: that device only, numbered in PCI bus order."""
    return {"CUDA_VISIBLE_DEVICES": pinned or "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


__all__ = ["CONTROL_NODES", "Gpu", "MigDevice", "device_nodes", "kernel_environment", "list_gpus", "pinning_ids",
           "proc_minor", "resolve_visible"]
