"""s2fault: a test lab for the arm64 KVM stage-2 fault path.

Data flows one way, one stage per module:

    source -> kernel (variant patches + kernel_configs fragments) -> guest (initramfs)
           -> machine (QEMU profile) -> analyzer + workload -> verdict -> report
"""

__version__ = "0.1.0"
