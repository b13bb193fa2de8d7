"""The torch side of sgafast's ops: the reference rounding (the specification in code), its noise
stream and temperature schedule, the ``Rounding`` value, and ``sga_round``, ``gaussian_bits`` and
``sga_round_bits`` over the fused kernels of the top-level ``kernels/`` (``sgafast.kernels``)."""
