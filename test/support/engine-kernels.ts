import type { Kernels } from "../../src/kernels/kernels.js";
import { nativeKernels } from "../../src/kernels/native.js";
import { NativeKernels } from "../../src/kernels/native-kernels.js";
import { TsKernels } from "../../src/kernels/ts-kernels.js";

/** Both kernel sets the engine runs on: the TypeScript one always, the native one where the addon built. */
export function kernelSets(): { name: string; make: () => Kernels; skip: string | false }[] {
  const addon = nativeKernels();
  return [
    { name: "ts", make: () => new TsKernels(), skip: false },
    { name: "native", make: () => new NativeKernels(addon!, { threads: 2 }), skip: addon ? false : "the native addon did not build" },
  ];
}
