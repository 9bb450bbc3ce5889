/** The parts of the wire codec that run on both ends and that other packages (the Vitest pool's guest entry) import. */
export { encodeV8, V8Decoder, MAX_V8_MESSAGE } from './v8-stream.js'
export { WireError } from './wire-error.js'
