// prompts.ts — the fixed text of the GPT-assisted data pipeline (docs/reference.md §7): the three system
// messages, the detailed-description and brief-description instruction lists, and a built-in set of
// few-shot examples.
//
// Decisions:
// - The system messages and the two instruction lists are data and are copied verbatim from
//   docs/reference.md §7. The reference prints the system messages wrapped to its page width; the line
//   breaks kept here are the ones that are real in the text (a short line followed by a new sentence, and
//   the "(1)"/"(2)" items), the others are the page's wrapping and became spaces. The double spaces after
//   "well-organized.", "bounding box." and "user's request." are in the original and are kept.
// - The reference few-shot files (playground/data/prompts/*/NNN_caps.txt, NNN_conv.txt) are not available.
//   The examples below are our own (invented scenes, invented boxes), written in the same input and output
//   formats, in the same numbers as the reference (conversation 2, detail 3, complex reasoning 3). They are
//   TypeScript constants rather than .txt assets so that the module works unchanged from lib/ (tsx) and from
//   dist/lib/ (tsc does not copy non-TS files). `writePromptsDir()` in prompt_set.ts writes them out in the
//   reference folder layout, which is also the layout `--prompts-dir` reads, so they can be edited or
//   replaced by the original files.
// - Box coordinates in the examples use the same style the context builder emits by default (three decimals,
//   trailing zeros kept), so the few-shot inputs look exactly like the query input.

/** The three kinds of generated data (docs/reference.md §7). */
export type GptDataType = 'conversation' | 'detail' | 'complex_reasoning';
export const GPT_DATA_TYPES: readonly GptDataType[] = ['conversation', 'detail', 'complex_reasoning'];

/** Folder name of each type in the reference prompts layout (playground/data/prompts/<folder>/). */
export const PROMPT_FOLDERS: Readonly<Record<GptDataType, string>> = {
  conversation: 'conversation',
  detail: 'detail_description',
  complex_reasoning: 'complex_reasoning',
};

/** Number of few-shot examples the reference uses per type (docs/reference.md §7). */
export const FEW_SHOT_COUNTS: Readonly<Record<GptDataType, number>> = { conversation: 2, detail: 3, complex_reasoning: 3 };

// ---------------------------------------------------------------------------------------------------------
// System messages (verbatim, docs/reference.md §7)

export const CONVERSATION_SYSTEM_MESSAGE = [
  'You are an AI visual assistant, and you are seeing a single image. What you see are provided with five sentences, describing the same image you are looking at. Answer all questions as you are seeing the image.',
  '',
  'Design a conversation between you and a person asking about this photo. The answers should be in a tone that a visual AI assistant is seeing the image and answering the question.',
  'Ask diverse questions and give corresponding answers.',
  '',
  'Include questions asking about the visual content of the image, including the object types, counting the objects, object actions, object locations, relative positions between objects, etc. Only include questions that have definite answers:',
  '(1) one can see the content in the image that the question asks about and can answer confidently;',
  '(2) one can determine confidently from the image that it is not in the image.',
  'Do not ask any question that cannot be answered confidently.',
  '',
  'Also include complex questions that are relevant to the content in the image, for example, asking about background knowledge of the objects in the image, asking to discuss about events happening in the image, etc. Again, do not ask about uncertain details.',
  'Provide detailed answers when answering complex questions. For example, give detailed examples or reasoning steps to make the content more convincing and well-organized.  You can include multiple paragraphs if necessary.',
].join('\n');

/** First paragraph shared by the detail-description and complex-reasoning system messages. */
const BOX_SYSTEM_INTRO =
  'You are an AI visual assistant that can analyze a single image. You receive five sentences, each describing the same image you are observing. In addition, specific object locations within the image are given, along with detailed coordinates. These coordinates are in the form of bounding boxes, represented as (x1, y1, x2, y2) with floating numbers ranging from 0 to 1. These values correspond to the top left x, top left y, bottom right x, and bottom right y.';

const BOX_SYSTEM_OUTRO = [
  'Instead of directly mentioning the bounding box coordinates, utilize this data to explain the scene using natural language. Include details like object counts, position of the objects, relative position between the objects.',
  '',
  'When using the information from the caption and coordinates, directly explain the scene, and do not mention that the information source is the caption or the bounding box.  Always answer as if you are directly looking at the image.',
].join('\n');

export const DETAIL_SYSTEM_MESSAGE = [
  BOX_SYSTEM_INTRO,
  '',
  'Using the provided caption and bounding box information, describe the scene in a detailed manner.',
  '',
  BOX_SYSTEM_OUTRO,
].join('\n');

export const COMPLEX_REASONING_SYSTEM_MESSAGE = [
  BOX_SYSTEM_INTRO,
  '',
  'The task is to use the provided caption and bounding box information, create a plausible question about the image, and provide the answer in detail.',
  '',
  'Create complex questions beyond describing the scene.',
  "To answer such questions, one should require first understanding the visual content, then based on the background knowledge or reasoning, either explain why the things are happening that way, or provide guides and help to user's request.  Make the question challenging by not including the visual content details in the question so that the user needs to reason about that first.",
  '',
  BOX_SYSTEM_OUTRO,
].join('\n');

export const SYSTEM_MESSAGES: Readonly<Record<GptDataType, string>> = {
  conversation: CONVERSATION_SYSTEM_MESSAGE,
  detail: DETAIL_SYSTEM_MESSAGE,
  complex_reasoning: COMPLEX_REASONING_SYSTEM_MESSAGE,
};

// ---------------------------------------------------------------------------------------------------------
// Instruction lists (verbatim, docs/reference.md §7)

/** The 16 detailed-description instructions; the human turn of a `detail` sample is drawn from these. */
export const DETAIL_DESCRIPTION_QUESTIONS: readonly string[] = [
  'Describe the following image in detail.',
  'Provide a detailed description of the given image.',
  'Give an elaborate explanation of the image you see.',
  'Share a comprehensive rundown of the presented image.',
  'Offer a thorough analysis of the image.',
  'Explain the various aspects of the image before you.',
  'Clarify the contents of the displayed image with great detail.',
  'Characterize the image using a well-detailed description.',
  'Break down the elements of the image in a detailed manner.',
  'Walk through the important details of the image.',
  'Portray the image with a rich, descriptive narrative.',
  'Narrate the contents of the image with precision.',
  'Analyze the image in a comprehensive and detailed manner.',
  'Illustrate the image through a descriptive explanation.',
  'Examine the image closely and share its details.',
  'Write an exhaustive depiction of the given image.',
];

/** The 11 brief-description instructions (stage-1 style caption questions in the paper). */
export const BRIEF_DESCRIPTION_QUESTIONS: readonly string[] = [
  'Describe the following image concisely.',
  'Provide a brief description of the given image.',
  'Offer a succinct explanation of the picture presented.',
  'Summarize the visual content of the following image.',
  'Give a short and clear explanation of the subsequent image.',
  'Share a concise interpretation of the image provided.',
  "Present a compact description of the photo's key features.",
  'Relay a brief, clear account of the picture shown.',
  'Render a clear and concise summary of the photo below.',
  'Write a terse but informative summary of the following picture.',
  'Create a compact narrative representing the image presented.',
];

// ---------------------------------------------------------------------------------------------------------
// Built-in few-shot examples (our own; see the header)

/** One few-shot example: `caps` is the user turn (context), `conv` the assistant turn (desired output). */
export interface FewShotExample {
  /** File stem in the prompts layout, e.g. "000". */
  name: string;
  caps: string;
  conv: string;
}

const lines = (...l: string[]): string => l.join('\n');

const CONVERSATION_EXAMPLES: FewShotExample[] = [
  {
    name: '000',
    caps: lines(
      'A brown dog leaps into the air to catch a yellow frisbee.',
      'A dog jumping high above a grassy park with a frisbee in its mouth.',
      'A medium sized dog catching a flying disc over the lawn.',
      'A man watches his dog jump for a frisbee on the grass.',
      'A dog in mid-air grabbing a frisbee on a sunny afternoon.',
    ),
    conv: lines(
      'Question:',
      'What is the dog doing?',
      '===',
      'Answer:',
      'The dog is leaping high into the air and catching a yellow frisbee in its mouth while it is still off the ground.',
      '===',
      'Question:',
      'What color is the frisbee?',
      '===',
      'Answer:',
      'The frisbee is yellow.',
      '===',
      'Question:',
      'Is anyone else in the scene with the dog?',
      '===',
      'Answer:',
      'Yes, a man is standing on the grass nearby and watching the dog as it jumps for the frisbee.',
      '===',
      'Question:',
      'Why is a game like this good for a dog?',
      '===',
      'Answer:',
      'Chasing and catching a frisbee gives a dog several things at once. It is hard physical exercise: short sprints and jumps build muscle and burn energy, which helps an active dog stay fit and calmer at home.',
      '',
      'It also trains focus and coordination, because the dog has to track a moving object, judge where it will come down and time its jump. Finally, it is a shared activity with the owner, so it strengthens their bond and gives the owner a natural moment to practise commands such as "drop" or "come". Owners should still warm the dog up, play on soft ground like this grass, and avoid very high jumps for young or older dogs to protect their joints.',
    ),
  },
  {
    name: '001',
    caps: lines(
      'A red double decker bus driving down a city street.',
      'A large red bus stopped at a crosswalk with pedestrians nearby.',
      'A two story bus travels past shops on a busy road.',
      'People crossing the street in front of a red double decker bus.',
      'A city bus with an advertisement on its side waits in traffic.',
    ),
    conv: lines(
      'Question:',
      'What type of vehicle is shown in the image?',
      '===',
      'Answer:',
      'The image shows a red double-decker bus, a bus with two passenger levels, driving on a city street.',
      '===',
      'Question:',
      'What are the people near the bus doing?',
      '===',
      'Answer:',
      'Several pedestrians are crossing the street at a crosswalk in front of the bus.',
      '===',
      'Question:',
      'Is there anything printed on the side of the bus?',
      '===',
      'Answer:',
      'Yes, the side of the bus carries a large advertisement.',
      '===',
      'Question:',
      'Why do some cities use double-decker buses?',
      '===',
      'Answer:',
      'A double-decker bus carries many more passengers than a single-level bus while taking up the same length of road and the same space at a stop. On busy routes through dense city centres this means fewer vehicles are needed for the same number of riders, which reduces congestion, driver costs and emissions per passenger.',
      '',
      'They also suit older cities with narrow streets and tight corners, where long articulated buses would struggle to turn. The trade-offs are height restrictions under low bridges and trees, and slower boarding because passengers have to use the stairs, so they work best on well-planned routes where the clearance is known.',
    ),
  },
];

const DETAIL_EXAMPLES: FewShotExample[] = [
  {
    name: '000',
    caps: lines(
      'A gray cat sleeping on a blue couch in a living room.',
      'A cat curled up on a sofa next to a television remote.',
      'A living room with a couch, a television and a potted plant.',
      'A sleepy cat resting on the cushions of a couch.',
      'A cozy room where a cat naps on the sofa in front of the TV.',
      '',
      'couch: [0.031, 0.412, 0.688, 0.955]',
      'cat: [0.214, 0.503, 0.472, 0.731]',
      'remote: [0.520, 0.648, 0.601, 0.690]',
      'tv: [0.742, 0.205, 0.986, 0.547]',
      'potted plant: [0.702, 0.560, 0.838, 0.944]',
    ),
    conv: lines(
      'The image shows a calm living room with a large blue couch taking up most of the left and lower part of the scene. A gray cat is curled up asleep on the cushions near the middle of the couch, looking relaxed and comfortable.',
      '',
      'A television remote lies on the couch a short distance to the right of the cat. On the right side of the room a television stands against the wall, and just below it, in front of the wall near the floor, there is a potted plant. The arrangement suggests a quiet, lived-in home where the cat has claimed the sofa for its afternoon nap.',
    ),
  },
  {
    name: '001',
    caps: lines(
      'People shopping at an outdoor fruit market.',
      'A market stall with bananas and oranges under an umbrella.',
      'Shoppers browse fresh fruit at a street vendor.',
      'A vendor stands behind a table of bananas and oranges.',
      'An open air market with fruit for sale and a large umbrella.',
      '',
      'person: [0.402, 0.218, 0.563, 0.792]',
      'person: [0.045, 0.301, 0.198, 0.998]',
      'person: [0.801, 0.276, 0.957, 0.990]',
      'umbrella: [0.251, 0.000, 0.772, 0.293]',
      'banana: [0.288, 0.604, 0.415, 0.702]',
      'banana: [0.417, 0.611, 0.523, 0.698]',
      'orange: [0.560, 0.633, 0.602, 0.688]',
      'orange: [0.604, 0.641, 0.647, 0.695]',
      'orange: [0.651, 0.629, 0.690, 0.684]',
    ),
    conv: lines(
      'This is an open-air fruit market. In the center of the scene a vendor stands behind a table, sheltered by a large umbrella that spans the top of the picture. Two bunches of bananas sit side by side on the left half of the table, and three oranges are lined up to their right.',
      '',
      'Two shoppers are browsing the stall: one stands at the far left edge of the image and the other at the far right, both close to the camera and facing the table. The busy, sunny atmosphere and the neatly displayed fruit give the impression of a lively neighborhood market.',
    ),
  },
  {
    name: '002',
    caps: lines(
      'A tennis player tossing the ball up to serve.',
      'A woman in white serving on a hard tennis court.',
      'A tennis player raises her racket as the ball goes up.',
      'A female athlete prepares to hit a serve during a match.',
      'A player on a blue court reaching up to serve a tennis ball.',
      '',
      'person: [0.356, 0.184, 0.619, 0.963]',
      'tennis racket: [0.541, 0.097, 0.702, 0.312]',
      'sports ball: [0.447, 0.021, 0.479, 0.064]',
    ),
    conv: lines(
      'A tennis player dressed in white is in the middle of a serve on a blue hard court. She stands near the center of the frame with her body stretched upward, and the tennis ball is high in the air just above her head, at the top of her toss.',
      '',
      'Her racket is raised above her right shoulder, up and to the right of her head, ready to swing at the ball as it falls. Apart from the player, her racket and the ball, the court around her is open, which keeps the focus on the moment just before she strikes the serve.',
    ),
  },
];

const COMPLEX_EXAMPLES: FewShotExample[] = [
  {
    name: '000',
    caps: lines(
      'A man with an umbrella wading through a flooded street.',
      'A person walks in knee deep water on a city road during heavy rain.',
      'Cars parked along a street that is covered by floodwater.',
      'A man holding a black umbrella crossing a flooded intersection.',
      'A rainy day in the city with water covering the road.',
      '',
      'person: [0.421, 0.237, 0.577, 0.884]',
      'umbrella: [0.382, 0.119, 0.640, 0.356]',
      'car: [0.000, 0.498, 0.233, 0.801]',
      'car: [0.781, 0.472, 1.000, 0.823]',
      'traffic light: [0.891, 0.033, 0.934, 0.198]',
    ),
    conv: lines(
      'Question:',
      'What precautions should this person take right now?',
      '===',
      'Answer:',
      'The man is walking through knee-deep floodwater in the middle of a street, holding an umbrella, with cars parked on both sides. Walking through floodwater is risky even when it looks calm, so he should take several precautions:',
      '',
      '1. Get out of the water as soon as possible and move to higher ground or a raised sidewalk. Moving water only a little deeper than this can knock an adult off balance.',
      '2. Watch for hidden hazards. Open manholes, potholes, broken glass and debris are invisible under muddy water; probing ahead with a stick or following a known route reduces the risk of a fall.',
      '3. Stay away from electrical sources such as the traffic light poles and any fallen cables, because floodwater can conduct electricity.',
      '4. Avoid contact with the water afterwards: floodwater often carries sewage and chemicals, so he should wash thoroughly and clean any cuts.',
      '',
      'He should also not attempt to drive one of the parked cars through the flood, since even shallow moving water can stall an engine or float a vehicle.',
    ),
  },
  {
    name: '001',
    caps: lines(
      'Children sitting around a table with a birthday cake.',
      'A cake with lit candles in front of a smiling girl.',
      'A group of kids at a party waiting to eat cake.',
      'A girl about to blow out the candles on her cake.',
      'Party hats and balloons around a table with a cake.',
      '',
      'cake: [0.402, 0.513, 0.611, 0.724]',
      'person: [0.388, 0.162, 0.625, 0.581]',
      'person: [0.051, 0.247, 0.283, 0.903]',
      'person: [0.712, 0.231, 0.949, 0.911]',
      'dining table: [0.000, 0.602, 1.000, 1.000]',
      'fork: [0.655, 0.781, 0.742, 0.806]',
    ),
    conv: lines(
      'Question:',
      'What is probably about to happen next, and why?',
      '===',
      'Answer:',
      'This appears to be a birthday party: a girl sits at the center of the table directly behind a cake with lit candles, while two other children sit on either side of her and the table is decorated with party hats and balloons. The girl in the middle is most likely the one celebrating her birthday.',
      '',
      'The next moment is very likely the traditional sequence of a birthday party. The other children and guests will sing a birthday song, the girl will make a wish and blow out the candles, and then the cake will be cut and shared, which is why a fork is already laid out on the table. Because there are young children close to open flames, an adult will usually stay nearby until the candles are out.',
    ),
  },
  {
    name: '002',
    caps: lines(
      'A surfer carrying a board toward large waves.',
      'A man in a wetsuit walks into the ocean with a surfboard.',
      'A person heading out to surf on a day with big waves.',
      'A surfer walking along the beach with waves breaking behind him.',
      'A surfer with a white board looks out at the rough sea.',
      '',
      'person: [0.298, 0.341, 0.402, 0.876]',
      'surfboard: [0.247, 0.472, 0.488, 0.561]',
    ),
    conv: lines(
      'Question:',
      'What skills and preparation does this activity require?',
      '===',
      'Answer:',
      'The man is walking into the ocean in a wetsuit, carrying a surfboard toward large breaking waves, so he is about to surf in demanding conditions. Doing this safely takes a combination of skills and preparation:',
      '',
      '- Strong swimming and paddling fitness, because he must paddle out through the breaking waves and may need to swim if he loses his board.',
      '- Wave knowledge: reading sets, currents and rip tides, and choosing a safe channel to paddle out.',
      '- Board handling: duck-diving or turtle-rolling under waves, popping up quickly and controlling the board on a steep face.',
      '- Good judgement about his own limits, since big surf can hold a surfer underwater for a long time.',
      '',
      'Preparation includes checking the forecast and tide, wearing a leash, surfing with a friend or near a lifeguard, and knowing the local hazards such as rocks or reefs. With waves this large, only an experienced surfer should go out.',
    ),
  },
];

/** The built-in few-shot examples per type (our own writing; see the header). */
export const BUILTIN_FEW_SHOT: Readonly<Record<GptDataType, readonly FewShotExample[]>> = {
  conversation: CONVERSATION_EXAMPLES,
  detail: DETAIL_EXAMPLES,
  complex_reasoning: COMPLEX_EXAMPLES,
};
