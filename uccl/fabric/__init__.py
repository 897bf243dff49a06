"""An emulated leaf-spine datacenter fabric on one machine, out of network namespaces (needs root).

    from uccl.fabric import Fabric, FabricSpec
    with Fabric(FabricSpec(hosts=4, leaves=2, spines=2, rate="100mbit")) as fab:
        fab.exec(0, ["ping", "-c1", fab.addr(3)])

Modules, each importing only the ones above it:

    netns       namespace, veth, address, tc tbf, nftables-loss and counter primitives
    emulator    FabricSpec (what to build), Fabric (build, run things, impair, count, remove)
    ranks       one torch.distributed rank per emulated host (`uccl-run --fabric`, `uccl-fabric run`)
    cli         the `uccl-fabric` command (also `python -m uccl.fabric`)
"""

from uccl.fabric.emulator import Fabric, FabricError, FabricSpec, available

__all__ = ["Fabric", "FabricError", "FabricSpec", "available"]
