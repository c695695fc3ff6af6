// index.ts — every op, as functions; also installed as Tensor methods.
import { installOps } from '../core/tensor';
import * as creation from './creation';
import * as view from './view';
import * as elementwise from './elementwise';
import * as reduce from './reduce';
import * as matmulOps from './matmul';
import * as nn from './nn';
import * as attention from './attention';

export * from './creation';
export * from './view';
export * from './elementwise';
export * from './reduce';
export * from './matmul';
export * from './nn';
export * from './attention';
export * from './quant';
export * from './lora';

installOps({ ...creation, ...view, ...elementwise, ...reduce, ...matmulOps, ...nn, ...attention } as unknown as typeof import('./index'));
