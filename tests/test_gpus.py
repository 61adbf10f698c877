"""autograder.gpus: CUDA_VISIBLE_DEVICES -> GPUs -> device nodes, on recorded nvidia-smi outputs
and fake /dev and /proc trees (no GPU needed).

The outputs follow the real formats: ``--query-gpu ... --format=csv,noheader`` lines,
``nvidia-smi -q -x`` (``nvsmi_device_v12.dtd``: ``<gpu id="bus">`` with ``<uuid>``,
``<minor_number>``, ``<pci><pci_bus_id>``, ``<mig_mode>``, ``<mig_devices>``), ``nvidia-smi -L``
with its indented ``MIG ... Device N: (UUID: MIG-...)`` lines,
``/proc/driver/nvidia/gpus/<bus>/information`` and ``/proc/driver/nvidia-caps/mig-minors``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from autograder import gpus
from autograder.gpus import (
    Gpu,
    MigDevice,
    device_nodes,
    kernel_environment,
    list_gpus,
    pinning_ids,
    resolve_visible,
)

QUERY = ("--query-gpu=index,uuid,pci.bus_id,name", "--format=csv,noheader")

# ------------------------------------------------------------------ a mixed workstation
# nvidia-smi index 0 is the older card on the lower bus, but CUDA's default (fastest first)
# makes the RTX 4090 device 0; and the driver gave /dev/nvidia0 to the card on bus 65.
WS_1080 = "GPU-e953c3c5-dba7-029e-ce44-7b51417131df"
WS_4090 = "GPU-4ce175fe-a313-4c4a-d620-560e96e8ef2e"
WORKSTATION = {
    QUERY: f"0, {WS_1080}, 00000000:17:00.0, NVIDIA GeForce GTX 1080 Ti\n"
           f"1, {WS_4090}, 00000000:65:00.0, NVIDIA GeForce RTX 4090\n",
    ("-q", "-x"): f"""<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<nvidia_smi_log>
	<timestamp>Fri Aug  4 11:44:30 2023</timestamp>
	<driver_version>535.54.03</driver_version>
	<cuda_version>12.2</cuda_version>
	<attached_gpus>2</attached_gpus>
	<gpu id="00000000:17:00.0">
		<product_name>NVIDIA GeForce GTX 1080 Ti</product_name>
		<product_brand>GeForce</product_brand>
		<mig_mode>
			<current_mig>N/A</current_mig>
			<pending_mig>N/A</pending_mig>
		</mig_mode>
		<mig_devices>
			None
		</mig_devices>
		<serial>N/A</serial>
		<uuid>{WS_1080}</uuid>
		<minor_number>1</minor_number>
		<vbios_version>86.02.40.00.48</vbios_version>
		<pci>
			<pci_bus>17</pci_bus>
			<pci_device>00</pci_device>
			<pci_domain>0000</pci_domain>
			<pci_device_id>1B0610DE</pci_device_id>
			<pci_bus_id>00000000:17:00.0</pci_bus_id>
		</pci>
	</gpu>
	<gpu id="00000000:65:00.0">
		<product_name>NVIDIA GeForce RTX 4090</product_name>
		<mig_mode>
			<current_mig>N/A</current_mig>
			<pending_mig>N/A</pending_mig>
		</mig_mode>
		<mig_devices>
			None
		</mig_devices>
		<uuid>{WS_4090}</uuid>
		<minor_number>0</minor_number>
		<pci>
			<pci_bus_id>00000000:65:00.0</pci_bus_id>
		</pci>
	</gpu>
</nvidia_smi_log>
""",
    ("-L",): f"GPU 0: NVIDIA GeForce GTX 1080 Ti (UUID: {WS_1080})\nGPU 1: NVIDIA GeForce RTX 4090 (UUID: {WS_4090})\n",
}
WS_PROC = {"0000:17:00.0": (WS_1080, 1), "0000:65:00.0": (WS_4090, 0)}

# ------------------------------------------------------------------ an A100 server with MIG
A100_0 = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
A100_1 = "GPU-e109d8d9-923e-7235-0429-96b7fdbcbd30"
MIG_3G = "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f"
MIG_2G = "MIG-b4bcd4f3-6f69-516d-9404-b5ada80d760b"
A100 = {
    QUERY: f"0, {A100_0}, 00000000:07:00.0, NVIDIA A100-SXM4-40GB\n1, {A100_1}, 00000000:0F:00.0, NVIDIA A100-SXM4-40GB\n",
    ("-q", "-x"): f"""<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<nvidia_smi_log>
	<driver_version>535.129.03</driver_version>
	<attached_gpus>2</attached_gpus>
	<gpu id="00000000:07:00.0">
		<product_name>NVIDIA A100-SXM4-40GB</product_name>
		<mig_mode>
			<current_mig>Enabled</current_mig>
			<pending_mig>Enabled</pending_mig>
		</mig_mode>
		<mig_devices>
			<mig_device>
				<index>0</index>
				<gpu_instance_id>1</gpu_instance_id>
				<compute_instance_id>0</compute_instance_id>
				<device_attributes>
					<shared>
						<multiprocessor_count>42</multiprocessor_count>
					</shared>
				</device_attributes>
				<fb_memory_usage>
					<total>19968 MiB</total>
				</fb_memory_usage>
			</mig_device>
			<mig_device>
				<index>1</index>
				<gpu_instance_id>5</gpu_instance_id>
				<compute_instance_id>0</compute_instance_id>
			</mig_device>
		</mig_devices>
		<uuid>{A100_0}</uuid>
		<minor_number>0</minor_number>
		<pci>
			<pci_bus_id>00000000:07:00.0</pci_bus_id>
		</pci>
	</gpu>
	<gpu id="00000000:0F:00.0">
		<product_name>NVIDIA A100-SXM4-40GB</product_name>
		<mig_mode>
			<current_mig>Disabled</current_mig>
			<pending_mig>Disabled</pending_mig>
		</mig_mode>
		<mig_devices>
			None
		</mig_devices>
		<uuid>{A100_1}</uuid>
		<minor_number>1</minor_number>
		<pci>
			<pci_bus_id>00000000:0F:00.0</pci_bus_id>
		</pci>
	</gpu>
</nvidia_smi_log>
""",
    ("-L",): f"""GPU 0: NVIDIA A100-SXM4-40GB (UUID: {A100_0})
  MIG 3g.20gb     Device  0: (UUID: {MIG_3G})
  MIG 2g.10gb     Device  1: (UUID: {MIG_2G})
GPU 1: NVIDIA A100-SXM4-40GB (UUID: {A100_1})
""",
}


def mig_minors(gpu_count: int = 2) -> str:
    """The driver's table as it lays it out: config 1, monitor 2, then per GPU minor, 15 GPU
    instances of one access capability and 8 compute instances each (gpu0/gi1/access is 12)."""
    lines, minor = ["config 1", "monitor 2"], 3
    for gpu in range(gpu_count):
        for gi in range(15):
            lines.append(f"gpu{gpu}/gi{gi}/access {minor}")
            minor += 1
            for ci in range(8):
                lines.append(f"gpu{gpu}/gi{gi}/ci{ci}/access {minor}")
                minor += 1
    return "\n".join(lines) + "\n"


MINORS = {line.split()[0]: int(line.split()[1]) for line in mig_minors().splitlines()}

# ------------------------------------------------------------------ identical GPUs, close UUIDs
SAME = ["GPU-8932f937-d72c-4106-c12f-20bd9faed9f6", "GPU-8932a1b2-0000-4106-c12f-20bd9faed9f6",
        "GPU-17d4c1aa-5b6e-22e1-9d0a-6f3a2b8c9d10"]
IDENTICAL = {QUERY: "".join(f"{i}, {u}, 00000000:{0x3b + i:02X}:00.0, NVIDIA H100 80GB HBM3\n"
                            for i, u in enumerate(SAME))}


def fake_smi(outputs: dict, calls: list | None = None):
    """subprocess.run stand-in: nvidia-smi prints the recorded output, or fails like it does."""

    def run(cmd, **kwargs):
        assert cmd[0] == "nvidia-smi" and kwargs.get("timeout"), cmd
        if calls is not None:
            calls.append(tuple(cmd[1:]))
        out = outputs.get(tuple(cmd[1:]))
        if out is None:
            return subprocess.CompletedProcess(cmd, 6, "", "Unknown option\n")
        return subprocess.CompletedProcess(cmd, 0, out, "")

    return run


def make_dev(tmp_path: Path, minors=(0, 1), caps=(), uvm_tools=True) -> Path:
    dev = tmp_path / "dev"
    (dev / "nvidia-caps").mkdir(parents=True)
    names = ["nvidiactl", "nvidia-uvm", "nvidia-modeset", *(f"nvidia{m}" for m in minors)]
    if uvm_tools:
        names.append("nvidia-uvm-tools")
    for name in names:
        (dev / name).touch()
    for cap in caps:
        (dev / "nvidia-caps" / f"nvidia-cap{cap}").touch()
    return dev


def make_proc(tmp_path: Path, gpus_info: dict | None = None, minors: str | None = None) -> Path:
    proc = tmp_path / "proc"
    for bus, (uuid, minor) in (gpus_info or {}).items():
        folder = proc / "driver" / "nvidia" / "gpus" / bus
        folder.mkdir(parents=True)
        (folder / "information").write_text(
            f"Model: \t\t NVIDIA GPU\nIRQ:   \t\t 63\nGPU UUID: \t {uuid}\nVideo BIOS: \t 86.02.40.00.48\n"
            f"Bus Type: \t PCIe\nDMA Size: \t 47 bits\nDMA Mask: \t 0x7fffffffffff\nBus Location: \t {bus}\n"
            f"Device Minor: \t {minor}\nGPU Excluded:\t No\n")
    if minors is not None:
        (proc / "driver" / "nvidia-caps").mkdir(parents=True)
        (proc / "driver" / "nvidia-caps" / "mig-minors").write_text(minors)
    return proc


@pytest.fixture
def workstation(tmp_path):
    tmp_path = tmp_path / "workstation"
    proc = make_proc(tmp_path, WS_PROC)
    return list_gpus(fake_smi(WORKSTATION), proc=proc), make_dev(tmp_path, uvm_tools=False), proc


@pytest.fixture
def a100(tmp_path):
    tmp_path = tmp_path / "a100"
    caps = [1, 2, *MINORS.values()]  # every capability node exists, config and monitor included
    proc = make_proc(tmp_path, minors=mig_minors())
    return list_gpus(fake_smi(A100), proc=proc), make_dev(tmp_path, caps=caps), proc


def names(nodes: list[str], dev: Path) -> list[str]:
    return [str(Path(n).relative_to(dev)) for n in nodes]


# ------------------------------------------------------------------------------ list_gpus
def test_list_gpus_reads_index_uuid_bus_and_the_minor_number(workstation):
    found, _, _ = workstation
    assert found == [
        Gpu(0, WS_1080, "00000000:17:00.0", 1, (), "NVIDIA GeForce GTX 1080 Ti", False),
        Gpu(1, WS_4090, "00000000:65:00.0", 0, (), "NVIDIA GeForce RTX 4090", False),
    ]


def test_list_gpus_takes_the_minor_from_proc_when_the_xml_report_fails(tmp_path):
    outputs = {QUERY: WORKSTATION[QUERY]}  # -q -x fails
    found = list_gpus(fake_smi(outputs), proc=make_proc(tmp_path, WS_PROC))
    assert [(g.index, g.minor) for g in found] == [(0, 1), (1, 0)]
    assert gpus.proc_minor("00000000:65:00.0", tmp_path / "proc") == 0
    assert list_gpus(fake_smi(outputs), proc=tmp_path / "nowhere")[0].minor == -1  # unknown, not guessed


def test_list_gpus_reads_mig_devices_with_their_uuids(a100):
    found, _, _ = a100
    assert found[0].mig_mode and found[0].mig == (MigDevice(MIG_3G, 1, 0), MigDevice(MIG_2G, 5, 0))
    assert not found[1].mig_mode and found[1].mig == ()
    assert [g.minor for g in found] == [0, 1]


def test_list_gpus_asks_for_the_mig_listing_only_where_mig_devices_exist(tmp_path):
    calls = []
    list_gpus(fake_smi(WORKSTATION, calls), proc=tmp_path)
    assert ("-L",) not in calls


@pytest.mark.parametrize("failure", [FileNotFoundError("nvidia-smi"), PermissionError("nvidia-smi"),
                                     subprocess.TimeoutExpired("nvidia-smi", 30), "rc", "garbage"])
def test_list_gpus_is_empty_without_a_working_nvidia_smi(failure):
    def run(cmd, **kwargs):
        if failure == "rc":
            return subprocess.CompletedProcess(cmd, 9, "", "NVIDIA-SMI has failed because it couldn't communicate "
                                                          "with the NVIDIA driver.\n")
        if failure == "garbage":
            return subprocess.CompletedProcess(cmd, 0, "No devices were found\n", "")
        raise failure

    assert list_gpus(run) == []
    assert pinning_ids("auto", list_gpus(run), environ={}) == []


# ------------------------------------------------------------------------- device_nodes
@pytest.mark.parametrize("visible, expected", [
    ("0", ["nvidia1"]),  # nvidia-smi's GPU 0 is /dev/nvidia1 here
    ("1", ["nvidia0"]),
    ("1,0", ["nvidia0", "nvidia1"]),
    (" 0 , 1 ", ["nvidia1", "nvidia0"]),
    ("0gpu", ["nvidia1"]),  # CUDA reads indices like strtoul
    (WS_4090, ["nvidia0"]),
    ("GPU-4ce1", ["nvidia0"]),  # a unique prefix, "GPU-" included
    (f"{WS_4090},{WS_1080}", ["nvidia0", "nvidia1"]),
])
def test_device_nodes_maps_each_form_to_the_minor_numbers(workstation, visible, expected):
    found, dev, proc = workstation
    nodes = names(device_nodes(visible, found, dev=dev, proc=proc), dev)
    assert nodes == ["nvidiactl", "nvidia-uvm", *expected]  # uvm-tools is absent here; modeset is never given


@pytest.mark.parametrize("visible, expected", [
    ("0,7,1", ["nvidia1"]),  # no GPU 7: CUDA stops there
    ("0,-1,1", ["nvidia1"]),
    ("1,,0", ["nvidia0"]),
    ("1,GPU-e953", ["nvidia0"]),  # indices first: a UUID is an invalid index
    (f"{WS_4090},1", ["nvidia0"]),  # UUIDs first: an index ends the list
    ("GPU-4ce1,GPU-ffff", ["nvidia0"]),
    ("x,0", []),
    ("-1", []),
    ("", []),
    ("  ", []),
    ("0,0", []),  # a duplicate makes CUDA see no device at all
    (f"GPU-4ce1,{WS_4090}", []),
    ("7", []),
    ("GPU-", []),  # a prefix of both: ambiguous
])
def test_invalid_entries_end_the_list_as_in_cuda(workstation, visible, expected):
    found, dev, proc = workstation
    nodes = names(device_nodes(visible, found, dev=dev, proc=proc), dev)
    assert nodes == (["nvidiactl", "nvidia-uvm", *expected] if expected else [])


def test_unset_visible_devices_grants_no_device_node(workstation):
    found, dev, proc = workstation
    assert device_nodes(None, found, dev=dev, proc=proc) == []
    assert resolve_visible(None, found) == found  # although CUDA would see every GPU


def test_an_ambiguous_uuid_prefix_selects_nothing(tmp_path):
    found = list_gpus(fake_smi(IDENTICAL), proc=tmp_path)
    assert resolve_visible("GPU-8932", found) == []
    assert resolve_visible("GPU-8932f", found) == [found[0]]
    assert resolve_visible("GPU-17d4,GPU-8932,GPU-8932a", found) == [found[2]]


def test_a_mig_device_gets_its_parent_and_its_own_two_capabilities(a100):
    found, dev, proc = a100
    nodes = names(device_nodes(MIG_2G, found, dev=dev, proc=proc), dev)
    assert nodes == ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia0",
                     f"nvidia-caps/nvidia-cap{MINORS['gpu0/gi5/access']}",
                     f"nvidia-caps/nvidia-cap{MINORS['gpu0/gi5/ci0/access']}"]
    assert MINORS["gpu0/gi1/access"] == 12 and MINORS["gpu0/gi1/ci0/access"] == 13
    mine = names(device_nodes("MIG-c6d4", found, dev=dev, proc=proc), dev)
    assert mine[-2:] == ["nvidia-caps/nvidia-cap12", "nvidia-caps/nvidia-cap13"]
    for other in ("nvidia-caps/nvidia-cap1", "nvidia-caps/nvidia-cap2", "nvidia1"):  # config, monitor, other GPU
        assert other not in nodes and other not in mine


def test_legacy_mig_ids_and_mig_lists(a100):
    found, dev, proc = a100
    assert resolve_visible(f"MIG-{A100_0}/5/0", found) == [(found[0], found[0].mig[1])]
    assert resolve_visible(f"{MIG_3G},{MIG_2G}", found) == [(found[0], m) for m in found[0].mig]
    assert resolve_visible(f"{MIG_3G},{A100_1}", found) == [(found[0], found[0].mig[0])]  # kind changes: stop
    assert resolve_visible("MIG-ffff", found) == []


def test_a_whole_gpu_in_mig_mode_brings_the_capabilities_of_its_mig_devices(a100):
    found, dev, proc = a100
    nodes = names(device_nodes("0", found, dev=dev, proc=proc), dev)
    caps = [MINORS[k] for k in ("gpu0/gi1/access", "gpu0/gi1/ci0/access", "gpu0/gi5/access", "gpu0/gi5/ci0/access")]
    assert nodes[3:] == ["nvidia0", *(f"nvidia-caps/nvidia-cap{c}" for c in caps)]
    assert names(device_nodes("1", found, dev=dev, proc=proc), dev)[3:] == ["nvidia1"]


def test_device_nodes_skips_missing_nodes_and_unknown_minors(tmp_path):
    found = list_gpus(fake_smi({QUERY: WORKSTATION[QUERY]}), proc=tmp_path / "none")  # minors unknown
    dev = make_dev(tmp_path, minors=(0,))
    assert names(device_nodes("0,1", found, dev=dev, proc=tmp_path), dev) == [
        "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"]
    known = [Gpu(0, WS_1080, "00000000:17:00.0", 1), Gpu(1, WS_4090, "00000000:65:00.0", 0)]
    assert names(device_nodes("0,1", known, dev=dev, proc=tmp_path), dev)[3:] == ["nvidia0"]  # no /dev/nvidia1


def test_device_nodes_asks_nvidia_smi_when_not_given_the_gpus(monkeypatch, workstation):
    _, dev, proc = workstation
    monkeypatch.setattr(gpus.subprocess, "run", fake_smi(WORKSTATION))
    assert names(device_nodes("GPU-e953", dev=dev, proc=proc), dev)[-1] == "nvidia1"


# --------------------------------------------------------------------------- pinning_ids
def test_auto_pins_every_gpu_by_uuid_in_pci_order(workstation):
    found, _, _ = workstation
    assert pinning_ids("auto", found, environ={}) == [WS_1080, WS_4090]
    assert pinning_ids("AUTO ", found, environ={}) == [WS_1080, WS_4090]


def test_auto_pins_mig_devices_instead_of_their_gpu(a100):
    found, _, _ = a100
    assert pinning_ids("auto", found, environ={}) == [MIG_3G, MIG_2G, A100_1]
    assert pinning_ids("0", found, environ={}) == [MIG_3G, MIG_2G]


@pytest.mark.parametrize("host, order, expected", [
    ("1", "PCI_BUS_ID", [WS_4090]),
    ("1,0", "PCI_BUS_ID", [WS_4090, WS_1080]),
    ("GPU-4ce1", None, [WS_4090]),  # UUIDs mean the same in either order
    ("", None, []),
    ("-1", None, []),
    ("0,5,1", "PCI_BUS_ID", [WS_1080]),
])
def test_auto_keeps_to_the_hosts_cuda_visible_devices(workstation, host, order, expected):
    found, _, _ = workstation
    environ = {"CUDA_VISIBLE_DEVICES": host, **({"CUDA_DEVICE_ORDER": order} if order else {})}
    assert pinning_ids("auto", found, environ=environ) == expected


def test_host_indices_in_fastest_first_order_are_refused_on_mixed_gpus(workstation, tmp_path):
    found, _, _ = workstation
    with pytest.raises(ValueError, match="fastest first.*CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        pinning_ids("auto", found, environ={"CUDA_VISIBLE_DEVICES": "0"})
    same = list_gpus(fake_smi(IDENTICAL), proc=tmp_path)  # identical GPUs: fastest first is PCI order
    assert pinning_ids("auto", same, environ={"CUDA_VISIBLE_DEVICES": "2,0"}) == [SAME[2], SAME[0]]


@pytest.mark.parametrize("requested", ["none", "NONE", "cpu", "", "  "])
def test_none_pins_nothing(workstation, requested):
    assert pinning_ids(requested, workstation[0], environ={}) == []


def test_explicit_indices_and_uuids(workstation):
    found, _, _ = workstation
    assert pinning_ids("1", found, environ={}) == [WS_4090]
    assert pinning_ids("1,0", found, environ={}) == [WS_4090, WS_1080]
    assert pinning_ids("GPU-e953,1", found, environ={}) == [WS_1080, WS_4090]
    assert pinning_ids("0", found, environ={"CUDA_VISIBLE_DEVICES": WS_1080}) == [WS_1080]


@pytest.mark.parametrize("requested, environ, message", [
    ("5", {}, "there is no GPU 5"),
    ("0,x", {}, "takes auto, none"),
    ("0-1", {}, "takes auto, none"),
    ("GPU-ffff", {}, "not the UUID"),
    ("GPU-", {}, "not the UUID"),
    ("0,0", {}, "already listed"),
    ("0,GPU-e953", {}, "already listed"),
    ("0", {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, "outside"),
    ("0", {"CUDA_VISIBLE_DEVICES": ""}, "outside"),
])
def test_bad_gpu_values_are_refused_with_a_reason(workstation, requested, environ, message):
    with pytest.raises(ValueError, match=message):
        pinning_ids(requested, workstation[0], environ=environ)


def test_explicit_gpus_without_any_gpu_are_refused():
    with pytest.raises(ValueError, match="finds no NVIDIA GPU"):
        pinning_ids("0", [], environ={})
    assert pinning_ids("auto", [], environ={}) == []


def test_a_mig_mode_gpu_without_mig_devices_is_not_a_device():
    gpu = Gpu(0, A100_0, "00000000:07:00.0", 0, (), "NVIDIA A100-SXM4-40GB", mig_mode=True)
    assert pinning_ids("auto", [gpu], environ={}) == []
    with pytest.raises(ValueError, match="MIG mode"):
        pinning_ids("0", [gpu], environ={})


def test_each_pinned_id_opens_exactly_its_own_gpu(workstation, a100):
    for found, dev, proc in (workstation, a100):
        for pinned in pinning_ids("auto", found, environ={}):
            env = kernel_environment(pinned)
            nodes = names(device_nodes(env["CUDA_VISIBLE_DEVICES"], found, dev=dev, proc=proc), dev)
            gpu_nodes = [n for n in nodes if n.startswith("nvidia") and n[6:].isdigit()]
            (selected,) = resolve_visible(pinned, found)
            gpu = selected if isinstance(selected, Gpu) else selected[0]
            assert gpu_nodes == [f"nvidia{gpu.minor}"], pinned
            assert len([n for n in nodes if n.startswith("nvidia-caps/")]) == (2 if pinned.startswith("MIG-") else 0)


def test_kernel_environment():
    assert kernel_environment(WS_4090) == {"CUDA_VISIBLE_DEVICES": WS_4090, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert kernel_environment(None) == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def test_the_module_needs_no_torch():
    import ast

    tree = ast.parse(Path(gpus.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "os", "re", "subprocess", "xml", "collections", "dataclasses", "pathlib"}
